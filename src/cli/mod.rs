//! Command-line interface: argument types and one module per subcommand.

use clap::{Parser, Subcommand};

pub mod embed;
pub mod tag;

/// adiff: explain how two audio recordings differ, in natural language.
#[derive(Debug, Parser)]
#[command(name = "adiff", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute HTSAT embeddings and AudioSet event probabilities for audio files.
    Embed(embed::EmbedArgs),
    /// Print the top AudioSet events of an audio file, with the time spans where each is active.
    Tag(tag::TagArgs),
}

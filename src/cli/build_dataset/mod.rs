//! `adiff build-dataset`: make data for training and evaluation.

pub mod embed_cache;
pub mod synthetic;

/// Build datasets: synthetic audio pairs with known differences, or an embedding cache.
#[derive(Debug, clap::Args)]
pub struct BuildDatasetArgs {
    #[command(subcommand)]
    pub command: BuildDatasetCommand,
}

/// The variants carry no doc comment of their own: `--help` then shows the full documentation
/// of each `...Args` struct (a variant's doc comment would replace it).
#[derive(Debug, clap::Subcommand)]
pub enum BuildDatasetCommand {
    Synthetic(synthetic::SyntheticArgs),
    EmbedCache(embed_cache::EmbedCacheArgs),
}

pub fn run(args: BuildDatasetArgs) -> anyhow::Result<()> {
    match args.command {
        BuildDatasetCommand::Synthetic(a) => synthetic::run(a),
        BuildDatasetCommand::EmbedCache(a) => embed_cache::run(a),
    }
}

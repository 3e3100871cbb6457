//! `adiff build-dataset`: make data for training and evaluation. `pairs` builds ACD/CLD-style
//! difference data from a caption dataset (paper, section 2.1 and appendix E); `synthetic`
//! renders pairs with known differences; `synthetic-remix` pairs rendered clips anew; `embed-cache` precomputes HTSAT embeddings.

pub mod embed_cache;
pub mod pairs;
pub mod remix;
pub mod synthetic;

/// Build a dataset (see the subcommands).
#[derive(Debug, clap::Args)]
pub struct BuildDatasetArgs {
    #[command(subcommand)]
    pub command: BuildDatasetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BuildDatasetCommand {
    // No doc comments here: they would replace each `...Args` struct's own (long) help.
    Pairs(pairs::PairsArgs),
    Synthetic(synthetic::SyntheticArgs),
    SyntheticRemix(remix::RemixArgs),
    EmbedCache(embed_cache::EmbedCacheArgs),
}

pub fn run(args: BuildDatasetArgs) -> anyhow::Result<()> {
    match args.command {
        BuildDatasetCommand::Pairs(a) => pairs::run(a),
        BuildDatasetCommand::Synthetic(a) => synthetic::run(a),
        BuildDatasetCommand::SyntheticRemix(a) => remix::run(a),
        BuildDatasetCommand::EmbedCache(a) => embed_cache::run(a),
    }
}

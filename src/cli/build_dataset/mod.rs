//! `adiff build-dataset`: make data for training and evaluation.

pub mod embed_cache;
pub mod synthetic;

/// Build datasets: synthetic audio pairs with known differences, or an embedding cache.
#[derive(Debug, clap::Args)]
pub struct BuildDatasetArgs {
    #[command(subcommand)]
    pub command: BuildDatasetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BuildDatasetCommand {
    /// Render pairs of synthetic clips with known attributes, explanations in 3 tiers, truth.jsonl.
    Synthetic(synthetic::SyntheticArgs),
    /// Precompute HTSAT embeddings of every audio file of explanation CSVs (resumable shards).
    EmbedCache(embed_cache::EmbedCacheArgs),
}

pub fn run(args: BuildDatasetArgs) -> anyhow::Result<()> {
    match args.command {
        BuildDatasetCommand::Synthetic(a) => synthetic::run(a),
        BuildDatasetCommand::EmbedCache(a) => embed_cache::run(a),
    }
}

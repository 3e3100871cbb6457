//! `adiff build-dataset`: make data for training and evaluation. `pairs` builds ACD/CLD-style
//! difference data from a caption dataset (paper, section 2.1 and appendix E); `synthetic`
//! renders pairs with known differences; `synthetic-remix` pairs rendered clips anew; `embed-cache` precomputes HTSAT embeddings;
//! `vocabulary` gives a model from scratch the GPT-2 tokens of a dataset.

pub mod embed_cache;
pub mod pairs;
pub mod remix;
pub mod synthetic;
pub mod vocabulary;

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
    Vocabulary(vocabulary::VocabularyArgs),
}

pub fn run(args: BuildDatasetArgs) -> anyhow::Result<()> {
    match args.command {
        BuildDatasetCommand::Pairs(a) => pairs::run(a),
        BuildDatasetCommand::Synthetic(a) => synthetic::run(a),
        BuildDatasetCommand::SyntheticRemix(a) => remix::run(a),
        BuildDatasetCommand::EmbedCache(a) => embed_cache::run(a),
        BuildDatasetCommand::Vocabulary(a) => vocabulary::run(a),
    }
}

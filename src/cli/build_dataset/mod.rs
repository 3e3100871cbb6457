//! `adiff build-dataset`: make training data. `pairs` builds ACD/CLD-style difference data from a
//! caption dataset (paper, section 2.1 and appendix E).

pub mod pairs;

/// Build a dataset (see the subcommands).
#[derive(Debug, clap::Args)]
pub struct BuildDatasetArgs {
    #[command(subcommand)]
    pub command: BuildDatasetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BuildDatasetCommand {
    // No doc comment here: it would replace PairsArgs' own (long) help.
    Pairs(pairs::PairsArgs),
}

pub fn run(args: BuildDatasetArgs) -> anyhow::Result<()> {
    match args.command {
        BuildDatasetCommand::Pairs(a) => pairs::run(a),
    }
}

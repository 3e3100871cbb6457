//! `adiff tag` (in progress).

#[derive(Debug, clap::Args)]
pub struct TagArgs {}

pub fn run(_args: TagArgs) -> anyhow::Result<()> {
    anyhow::bail!("adiff tag: not yet supported")
}

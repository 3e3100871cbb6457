//! `adiff embed` (in progress).

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {}

pub fn run(_args: EmbedArgs) -> anyhow::Result<()> {
    anyhow::bail!("adiff embed: not yet supported")
}

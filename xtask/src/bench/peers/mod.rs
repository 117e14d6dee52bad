//! placeholder
#[derive(clap::Args, Clone, Debug)]
pub struct PeersArgs {}
pub fn run(_a: &PeersArgs) -> anyhow::Result<()> {
    Ok(())
}

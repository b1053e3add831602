use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub struct SweepArgs {}

pub fn run(_args: SweepArgs) -> Result<()> {
    bail!("sweep is not implemented yet")
}

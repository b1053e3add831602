use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub struct FitArgs {}

pub fn run(_args: FitArgs) -> Result<()> {
    bail!("fit is not implemented yet")
}

//! `cargo xtask report [--check]`: regenerate every experiment under experiments/.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("xtask: not implemented yet")
}

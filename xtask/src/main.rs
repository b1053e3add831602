//! `cargo xtask report [--check]`: regenerate every experiment under experiments/.
//! `cargo xtask bench [--quick] [--python PATH]`: benchmarks -> benches/RESULTS.md.
mod bench;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        return bench::run(&args[1..]);
    }
    anyhow::bail!("xtask: not implemented yet")
}

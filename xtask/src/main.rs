//! `cargo xtask`: project automation, rust-analyzer style. This file only parses flags and
//! dispatches; each command is one module.
//!
//! - `cargo xtask report`: regenerate every experiment under `experiments/`.
//! - `cargo xtask report --check`: regenerate in memory and fail, naming the file, when a
//!   committed output is stale (also run by `cargo test` as a plain test).
//! - `cargo xtask bench [--quick] [--serve-only] [--python PATH]`: criterion benchmarks, the peft
//!   side-by-side and the `ftbudget serve` load check, summarized in `benches/RESULTS.md`.

mod bench;
mod experiments;
mod report;

use anyhow::{Result, bail};
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask report [--check] | cargo xtask bench [--quick] [--serve-only] [--python PATH]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["report"] => report::run(report::Mode::Write),
        ["report", "--check"] => report::run(report::Mode::Check),
        ["bench", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            bench::run(&rest)
        }
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments `{}`; {USAGE}", args.join(" ")),
    }
}

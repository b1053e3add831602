//! `ftbudget`: what does it cost to fine-tune this transformer? Parses flags and dispatches; one
//! module per subcommand. Errors print as one line on stderr and exit with code 2.

mod args;
mod cmd;
mod model_source;
mod output;
mod recipe;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ftbudget",
    version,
    about = "Parameter counts and memory for fine-tuning a transformer, before renting a GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered regimes and their options
    Regimes,
    /// List the built-in model presets
    Presets,
    /// Compare regimes on one model: parameters and memory per bucket
    Estimate(cmd::estimate::EstimateArgs),
    /// Sweep ranks and widths, one row per point
    Sweep(cmd::sweep::SweepArgs),
    /// Will it fit on this GPU? Largest batch, sequence and rank that fit
    Fit(cmd::fit::FitArgs),
    /// What a run costs: step FLOPs, wall time, GPU-hours and money per regime
    Cost(cmd::cost::CostArgs),
    /// Serve a local web page and a JSON API with the same answers (estimate, fit)
    Serve(cmd::serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Regimes => cmd::regimes::run(),
        Command::Presets => cmd::presets::run(),
        Command::Estimate(a) => cmd::estimate::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Fit(a) => cmd::fit::run(a),
        Command::Cost(a) => cmd::cost::run(a),
        Command::Serve(a) => cmd::serve::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

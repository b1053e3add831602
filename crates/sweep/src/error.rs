//! Errors of sweeps and fits: one line, naming the flag or field at fault.

use ftbudget_core::{CountError, RegimeError, RegistryError, ShapeError};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SweepError {
    /// A list or range the user wrote that cannot be read.
    #[error("{flag}: {reason}")]
    Range { flag: &'static str, reason: String },
    /// A width that the model family cannot be scaled to.
    #[error("--widths: {reason}")]
    Width { reason: String },
    /// The grid is larger than a sweep may be.
    #[error("the sweep has {points} points, more than the limit of {limit}; narrow a range")]
    TooLarge { points: u128, limit: u64 },
    #[error(
        "the sweep needs {shapes} model shapes (widths x layers), more than the limit of {limit}"
    )]
    TooManyShapes { shapes: u128, limit: u64 },
    #[error("--gpu: {reason}")]
    Gpu { reason: String },
    /// A timing input (`--mfu`, `--peak`, `--price-per-gpu-hour`, `--tokens`) out of range.
    #[error("{flag}: {reason}")]
    Timing { flag: &'static str, reason: String },
    // The cause is part of the one-line message, so it is not also exposed as `source()`
    // (which would make `{:#}` print it twice).
    #[error("{context}: {cause}")]
    Shape { context: String, cause: ShapeError },
    #[error(transparent)]
    Regime(#[from] RegimeError),
    #[error(transparent)]
    Count(#[from] CountError),
    /// A regime the registry cannot build (an unknown name, a bad option).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

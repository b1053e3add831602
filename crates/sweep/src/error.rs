//! Errors of sweeps and fits: one line, naming the flag or field at fault.

use ftbudget_core::{CountError, RegimeError, ShapeError};
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
    #[error("{context}: {source}")]
    Shape {
        context: String,
        #[source]
        source: ShapeError,
    },
    #[error(transparent)]
    Regime(#[from] RegimeError),
    #[error(transparent)]
    Count(#[from] CountError),
}

//! Many estimates at once: rank x width x layers x batch x seq sweeps, run on every core, and the
//! "what fits" solver. The key decision is that a sweep never re-derives what does not change:
//! model shapes are built once per (width, layers) pair before any work starts (so every bad range
//! or impossible shape is an error up front), regimes once per rank, and each worker reuses one
//! [`TrainingPlan`](ftbudget_core::TrainingPlan) whose buffers are re-filled in place, so the hot
//! loop is `plan_into` + `estimate_memory` with no allocation. Fit answers are solved by
//! exponential search and bisection over estimates that are monotone in batch, sequence length and
//! rank, never by stepping.
//!
//! Architecture invariant: no I/O here either; rendering and progress display belong to the CLI.

pub mod error;
pub mod fit;
pub mod gpu;
pub mod grid;
pub mod point;
pub mod range;
pub mod scale;
pub mod spec;
pub mod timing;

pub use error::SweepError;
pub use fit::{FitAnswer, FitQuery, Limit, RankSearch, largest_fitting};
pub use gpu::{GPU_PRESETS, GpuMemory, GpuPreset, parse_gpu, parse_size};
pub use grid::{Grid, MAX_POINTS, MAX_SHAPES, RegimePoint, Row, ShapePoint};
pub use point::{PointEstimate, evaluate, evaluate_into, evaluate_with_flops};
pub use range::{MAX_AXIS_VALUES, parse_values};
pub use scale::{ScaledShape, scale_spec, width_step};
pub use spec::{MAX_RANK, spec_with_rank};
pub use timing::{DEFAULT_MFU, PeakDtype, RunCost, Timing, TimingInputs, parse_tokens};

//! The arithmetic heart of ftbudget: a transformer is described as a [`ModelShape`] (named Linear
//! modules and parameter groups stored as *kinds with counts*, never one entry per layer), a
//! training regime turns that shape into a [`TrainingPlan`] (which parameters exist, which are
//! trainable, how each group is stored), and the shared [`memory`] model turns any plan into bytes
//! in four buckets. Regimes live in their own crates and register with [`inventory`]; the
//! [`Registry`] collects them and rejects duplicate names.
//!
//! Architecture invariant: this crate does no file or network I/O. Every count is an exact integer
//! computed with checked arithmetic; floating point appears only in ratios.

pub mod dtype;
pub mod error;
pub mod flops;
pub mod memory;
pub mod plan;
pub mod regime;
pub mod registry;
pub mod shape;
pub mod spec;
pub mod targets;

pub use dtype::DType;
pub use error::{
    CountError, RegimeError, RegistryError, SettingProblem, SettingsError, ShapeError,
    TargetSpecError, UnknownName,
};
pub use flops::{FlopSettings, FlopUnits, StepFlops, step_flops};
pub use memory::{
    ActivationModel, ActivationSettings, AttentionImpl, Checkpointing, CudaOverhead, FitMargin,
    LossKind, MemoryEstimate, MemorySettings, Optimizer, PeakEstimate, Precision, ReservedEstimate,
    SettingsOverrides, Sharding, StepKind, StepPeak, StepPhase, StepSettings, Workload,
    estimate_memory,
};
pub use plan::{
    ActivationDtype, ActivationTerm, AdapterInput, AdapterLayout, AdapterOutput, AdapterPiece,
    AdapterSite, BaseTraining, BaseTreatment, MAX_ADAPTER_PIECES, Nf4Layout, ParamOrigin,
    ParamSource, PieceMatmul, PieceRole, PlanTotals, PlannedParams, SizeForm, Storage,
    TrainingPlan, first_block_elements, int8_tensor_bytes,
};
pub use regime::{OptionDoc, OptionReader, Regime, RegimeRegistration, RegimeSpec};
pub use registry::Registry;
pub use shape::{
    ActivationRecipe, AdaptedInputs, AdapterHost, AdapterUnits, Architecture, AttentionLayout,
    BlockSpec, Dims, ExpertLayout, ExpertTargets, ExpertsSpec, Family, GroupAdapterUnits,
    LatentAttention, LayerKind, LayerSpan, LinearLayout, LinearModule, MlpActivation, MlpLayout,
    ModelShape, ModuleGroup, NormKind, NormPlacement, ParamGroup, ParamKind, ParamSums,
    PositionKind, QkNorm, SharedExperts, SlidingWindow, layer_spans,
};
pub use spec::{Naming, TransformerSpec};
pub use targets::{TargetSelection, TargetSpec, names_select};

/// Re-exported so regime crates can `ftbudget_core::inventory::submit!` without their own
/// dependency line drifting from the core's version.
pub use inventory;

//! One point: a regime on a model under memory settings, reduced to the figures a sweep row or a
//! scaling experiment needs (parameter counts, trainable fraction, memory per bucket).

use crate::error::SweepError;
use ftbudget_core::{
    FlopSettings, MemoryEstimate, MemorySettings, ModelShape, Regime, StepFlops, TrainingPlan,
    estimate_memory, step_flops,
};
use serde::Serialize;

/// Counts and memory at one point.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PointEstimate {
    pub trainable_params: u64,
    pub frozen_params: u64,
    /// peft's `all params` (base + adapters + saved copies).
    pub all_params: u64,
    /// trainable / all params.
    pub trainable_fraction: f64,
    pub memory: MemoryEstimate,
    /// FLOPs of one step (`ftbudget_core::flops`).
    pub flops: StepFlops,
}

/// Counts and memory of `plan` (already planned for `model`) under `settings`.
pub fn evaluate_into(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<PointEstimate, SweepError> {
    let flops = step_flops(model, plan, &FlopSettings::of(settings))?;
    evaluate_with_flops(model, plan, settings, flops)
}

/// As [`evaluate_into`], with the step's FLOPs already counted (a sweep evaluates the plan's
/// precomputed [`ftbudget_core::FlopUnits`] at the row's workload).
pub fn evaluate_with_flops(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    flops: StepFlops,
) -> Result<PointEstimate, SweepError> {
    let trainable = plan.trainable_params()?;
    let frozen = plan.frozen_params()?;
    let all = plan.all_params()?;
    let memory = estimate_memory(model, plan, settings)?;
    Ok(PointEstimate {
        trainable_params: trainable,
        frozen_params: frozen,
        all_params: all,
        trainable_fraction: if all == 0 {
            0.0
        } else {
            trainable as f64 / all as f64
        },
        memory,
        flops,
    })
}

/// Plan `regime` on `model` (reusing `plan`'s buffers) and evaluate it.
pub fn evaluate(
    model: &ModelShape,
    regime: &dyn Regime,
    settings: &MemorySettings,
    plan: &mut TrainingPlan,
) -> Result<PointEstimate, SweepError> {
    regime.plan_into(model, plan)?;
    evaluate_into(model, plan, settings)
}

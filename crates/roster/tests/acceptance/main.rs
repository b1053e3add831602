//! Cross-regime acceptance tests: every regime the roster links, checked against the seed lab's
//! hand arithmetic and against properties that must hold for any transformer shape.
//!
//! One integration-test binary (ripgrep style); its modules:
//! - `seed_hand_numbers`: the seed lab's own figures for MiniGPT (49,152 Linear weights per
//!   layer, LoRA r=8 = 9,216 per layer, 2 MiB of activations, the 25% attention ratio) and the
//!   ZeRO paper's 16 bytes per parameter.
//! - `properties`: proptest over random shapes of every family and random ranks: parameter
//!   bookkeeping, LoRA linear in r, QLoRA < LoRA < full FT in weight bytes, DoRA = LoRA + one
//!   magnitude per output feature.
//! - `weight_casts`: autocast copies only weights not already in the compute dtype.

mod properties;
mod seed_hand_numbers;
mod weight_casts;

use ftbudget_core::{MemoryEstimate, MemorySettings, ModelShape, Regime, TrainingPlan};

/// Build a regime from its spec through the roster's registry (the path the CLI takes).
pub fn regime(spec: &str) -> Box<dyn Regime> {
    ftbudget_roster::registry()
        .expect("registry assembles")
        .build(spec)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
}

pub fn plan(spec: &str, model: &ModelShape) -> TrainingPlan {
    regime(spec)
        .plan(model)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
}

pub fn estimate(spec: &str, model: &ModelShape, settings: &MemorySettings) -> MemoryEstimate {
    ftbudget_core::estimate_memory(model, &plan(spec, model), settings)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
}

//! Shared fixtures for the criterion benchmarks in `benches/`: the model shapes benchmarked (the
//! course's MiniGPT, LLaMA-2-7B and LLaMA-2-70B presets) and the regimes, built once through the
//! roster.

use ftbudget_core::{ModelShape, TransformerSpec};

/// A preset's config.
pub fn spec(name: &str) -> TransformerSpec {
    ftbudget_models::presets::spec(name).unwrap_or_else(|| panic!("no preset `{name}`"))
}

pub fn shape(name: &str) -> ModelShape {
    spec(name).build().expect("benchmark shapes build")
}

/// The models of the single-estimate groups.
pub const MODELS: &[&str] = &["minigpt", "llama-2-7b", "llama-2-70b"];

/// The regimes of the single-estimate groups (LoRA family on all linear layers): (benchmark id,
/// spec).
pub const REGIMES: &[(&str, &str)] = &[
    ("full-ft", "full-ft"),
    ("lora-r8", "lora:r=8"),
    ("qlora-r8", "qlora:r=8"),
    ("dora-r8", "dora:r=8"),
];

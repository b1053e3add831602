//! Shared fixtures for the criterion benchmarks in `benches/`: the model shapes benchmarked (the
//! course's MiniGPT, LLaMA-2-7B, and a LLaMA-2-70B config built here until the models crate has
//! it) and the regimes, built once through the roster.

use ftbudget_core::{
    AttentionLayout, Family, MlpLayout, ModelShape, NormKind, PositionKind, TransformerSpec,
};

/// LLaMA-2-70B's published config: hidden 8192, 80 layers, 64 heads, 8 kv heads, intermediate
/// 28672, vocab 32000, untied, RMSNorm, rotary, gated MLP (68,976,648,192 parameters).
pub fn llama_2_70b_spec() -> TransformerSpec {
    TransformerSpec {
        name: "llama-2-70b".into(),
        family: Family::Llama,
        hidden: 8192,
        layers: 80,
        heads: 64,
        kv_heads: Some(8),
        head_dim: None,
        intermediate: 28672,
        vocab: 32000,
        max_positions: 4096,
        tied_embeddings: false,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        norm: NormKind::RmsNorm,
        positions: PositionKind::Rotary,
        attention: AttentionLayout::Separate,
        mlp: MlpLayout::Gated,
    }
}

/// A preset, or the 70B config above.
pub fn spec(name: &str) -> TransformerSpec {
    if name == "llama-2-70b" {
        return llama_2_70b_spec();
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn llama_2_70b_has_its_published_parameter_count() {
        assert_eq!(super::shape("llama-2-70b").total_params(), 68_976_648_192);
    }
}

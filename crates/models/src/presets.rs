//! Built-in model presets. Each is checked against its published parameter count in tests.

use ftbudget_core::{AttentionLayout, Family, MlpLayout, NormKind, PositionKind, TransformerSpec};

#[allow(clippy::too_many_arguments)]
fn llama_like(
    name: &str,
    family: Family,
    hidden: u64,
    layers: u64,
    heads: u64,
    kv: u64,
    inter: u64,
    vocab: u64,
    positions: u64,
) -> TransformerSpec {
    TransformerSpec {
        name: name.into(),
        family,
        hidden,
        layers,
        heads,
        kv_heads: Some(kv),
        head_dim: None,
        intermediate: inter,
        vocab,
        max_positions: positions,
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

/// Preset names, in display order.
pub fn names() -> Vec<&'static str> {
    vec!["minigpt", "llama-2-7b"]
}

pub fn spec(name: &str) -> Option<TransformerSpec> {
    Some(match name {
        "minigpt" => TransformerSpec::minigpt(),
        "llama-2-7b" => llama_like(name, Family::Llama, 4096, 32, 32, 32, 11008, 32000, 4096),
        _ => return None,
    })
}

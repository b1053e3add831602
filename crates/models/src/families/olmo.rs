//! OLMo (1): LLaMA's modules with LayerNorms that have no parameters at all. OLMo 2, OLMo 3 and
//! EXAONE 4: norms after attention and after the MLP (no pre-norms), and q/k
//! norms (OLMo 2/3 over all heads at once, EXAONE 4 per head); OLMoE: LLaMA's pre-norms, q/k norms
//! over all heads, and routed experts that peft 0.21 converts like Qwen2-MoE's.

use super::FamilyReader;
use super::qwen::QWEN2_MOE_CONVERSION;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{
    BlockSpec, ExpertLayout, ExpertsSpec, LayerSpan, MlpLayout, Naming, NormKind, NormPlacement,
    QkNorm, TransformerSpec,
};

/// OLMo 1 (`olmo`): `OlmoLayerNorm` is `F.layer_norm(x, shape, None, None)`, so the block and
/// final norms hold no parameters; `attention_bias` on q, k, v and o (`clip_qkv` has none).
pub const OLMO: FamilyReader = FamilyReader {
    model_types: &["olmo"],
    read: |f, name, family| {
        let d = Defaults {
            vocab: 50304,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.norm = NormKind::NonParametricLayerNorm;
        Ok(spec)
    },
};

const POST_NAMES: Naming = Naming {
    block_norms: [
        "post_attention_layernorm",
        "post_feedforward_layernorm",
        "",
        "",
    ],
    ..Naming::LLAMA
};

/// OLMo 3 is OLMo 2's block (its sliding-window layers have no parameters of their own).
pub const OLMO2: FamilyReader = FamilyReader {
    model_types: &["olmo2", "olmo3"],
    read: |f, name, family| {
        let d = Defaults {
            vocab: 50304,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.block = BlockSpec {
            norm_placement: NormPlacement::Post,
            qk_norm: QkNorm::AllHeads,
            ..BlockSpec::DECODER
        };
        spec.names = POST_NAMES;
        Ok(spec)
    },
};

/// OLMoE: `attention_bias` on q, k, v and o; q/k norms over all heads; every layer's MLP is
/// `num_experts` experts of `intermediate_size` (OlmoeConfig's defaults: 64 experts, top 8).
pub const OLMOE: FamilyReader = FamilyReader {
    model_types: &["olmoe"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2048,
            intermediate: Some(2048),
            layers: 16,
            heads: 16,
            kv_heads: None,
            head_dim: None,
            vocab: 50304,
            max_positions: 4096,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.block = BlockSpec {
            qk_norm: QkNorm::AllHeads,
            ..BlockSpec::DECODER
        };
        // OlmoeExperts are `intermediate_size` wide, in every layer (`num_local_experts` is an
        // alias of `num_experts`).
        let experts = if f.has("num_local_experts") {
            f.positive("num_local_experts", None)?
        } else {
            f.positive("num_experts", Some(64))?
        };
        spec.mlp = MlpLayout::Experts(ExpertsSpec {
            experts,
            top_k: f.positive("num_experts_per_tok", Some(8))?,
            intermediate: spec.intermediate,
            sparse_layers: spec.layers,
            dense_span: None,
            sparse_span: Some(LayerSpan::all_sparse(spec.layers)),
            layout: ExpertLayout::Fused { bias: false },
            router_bias: false,
            routing_groups: None,
            shared: None,
            peft_targets: Some(QWEN2_MOE_CONVERSION),
        });
        Ok(spec)
    },
};

pub fn exaone4(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
) -> Result<TransformerSpec, ModelError> {
    let d = Defaults {
        hidden: 4096,
        intermediate: Some(16384),
        layers: 32,
        heads: 32,
        kv_heads: Some(32),
        head_dim: None,
        vocab: 102400,
        max_positions: 2048,
        tied: false,
    };
    let mut spec = decoder(f, name, family, &d)?;
    spec.block = BlockSpec {
        norm_placement: NormPlacement::Post,
        qk_norm: QkNorm::HeadDim,
        ..BlockSpec::DECODER
    };
    spec.names = POST_NAMES;
    Ok(spec)
}

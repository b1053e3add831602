//! GLM-4: biased q/k/v, a fused `gate_up_proj`, four norms per block (before and after attention
//! and the MLP), partial rotary; GLM-4.5's mixture of experts (`glm4_moe`).

use super::FamilyReader;
use super::qwen::QWEN2_MOE_CONVERSION;
use crate::config::{Defaults, decoder, head_dim_of, rotary_dim};
use ftbudget_core::{
    BlockSpec, ExpertLayout, ExpertsSpec, MlpLayout, Naming, NormPlacement, QkNorm, SharedExperts,
    layer_spans,
};

pub const GLM4: FamilyReader = FamilyReader {
    model_types: &["glm4"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 4096,
            intermediate: Some(13696),
            layers: 40,
            heads: 32,
            kv_heads: Some(2),
            head_dim: Some(128),
            vocab: 151552,
            max_positions: 131072,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.qkv_bias = f.flag("attention_bias", true)?;
        spec.mlp = MlpLayout::FusedGated;
        let factor = f.fraction("partial_rotary_factor", 0.5)?;
        spec.block = BlockSpec {
            norms: 4,
            norm_placement: NormPlacement::Sandwich,
            rotary_dim: rotary_dim(head_dim_of(&spec), factor),
            ..BlockSpec::DECODER
        };
        spec.names = Naming {
            block_norms: [
                "input_layernorm",
                "post_attention_layernorm",
                "post_self_attn_layernorm",
                "post_mlp_layernorm",
            ],
            ..Naming::LLAMA
        };
        Ok(spec)
    },
};

/// GLM-4 before the 0414 release (`glm`): GLM-4's modules with two norms per block.
pub const GLM: FamilyReader = FamilyReader {
    model_types: &["glm"],
    read: |f, name, family| {
        let mut spec = (GLM4.read)(f, name, family)?;
        spec.block = BlockSpec {
            norms: 2,
            norm_placement: NormPlacement::Pre,
            ..spec.block
        };
        spec.names = Naming::LLAMA;
        Ok(spec)
    },
};

/// GLM-4.5/4.6 (`glm4_moe`): LLaMA's attention with biased q/k/v (`attention_bias`), optional
/// per-head q/k norms (`use_qk_norm`), partial rotary (0.5 by default), LLaMA's two pre-norms,
/// `first_k_dense_replace` dense layers, then routed experts of `moe_intermediate_size` with
/// `n_shared_experts` shared ones and a sigmoid router (`gate.weight`, a parameter with the
/// `e_score_correction_bias` buffer). peft 0.21 converts its expert names like Qwen2-MoE's.
/// The checkpoint's multi-token-prediction layer is not part of the transformers model.
pub const GLM4_MOE: FamilyReader = FamilyReader {
    model_types: &["glm4_moe"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 4096,
            intermediate: Some(10944),
            layers: 46,
            heads: 96,
            kv_heads: Some(8),
            head_dim: None,
            vocab: 151552,
            max_positions: 131072,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.qkv_bias = f.flag("attention_bias", false)?;
        let routed = if f.has("num_local_experts") {
            f.positive("num_local_experts", None)?
        } else {
            f.positive("n_routed_experts", Some(128))?
        };
        let first_dense = f.count("first_k_dense_replace", 1)?;
        let moe_intermediate = f.positive("moe_intermediate_size", Some(1408))?;
        let shared = f.count("n_shared_experts", 1)?;
        let [dense_span, sparse_span] = layer_spans(spec.layers, |i| i >= first_dense);
        spec.mlp = MlpLayout::Experts(ExpertsSpec {
            experts: routed,
            top_k: f.positive("num_experts_per_tok", Some(8))?,
            intermediate: moe_intermediate,
            sparse_layers: spec.layers.saturating_sub(first_dense),
            dense_span,
            sparse_span,
            layout: ExpertLayout::Fused { bias: false },
            router_bias: false,
            // transformers' `Glm4MoeTopkRouter` routes as DeepSeek-V3's does.
            routing_groups: Some(f.routing_groups(routed, (1, 1))?),
            shared: (shared > 0).then_some(SharedExperts {
                intermediate: moe_intermediate * shared,
                gate: false,
            }),
            peft_targets: Some(QWEN2_MOE_CONVERSION),
        });
        let factor = f.fraction("partial_rotary_factor", 0.5)?;
        spec.block = BlockSpec {
            qk_norm: if f.flag("use_qk_norm", false)? {
                QkNorm::HeadDim
            } else {
                QkNorm::None
            },
            rotary_dim: rotary_dim(head_dim_of(&spec), factor),
            ..BlockSpec::DECODER
        };
        Ok(spec)
    },
};

//! DeepSeek-V2/V3: multi-head latent attention (`q_a_proj`/`q_b_proj`, or `q_proj` when
//! `q_lora_rank` is null as in DeepSeek-V2-Lite; `kv_a_proj_with_mqa`/`kv_b_proj`; their norms),
//! routed experts with shared experts, and `first_k_dense_replace` dense layers. peft 0.21
//! converts its expert names like Qwen2-MoE's (see `qwen::QWEN2_MOE_CONVERSION`).

use super::FamilyReader;
use super::qwen::QWEN2_MOE_CONVERSION;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{
    AttentionLayout, BlockSpec, ExpertLayout, ExpertsSpec, LatentAttention, MlpLayout,
    SharedExperts, TransformerSpec, layer_spans,
};

struct DeepseekDefaults {
    base: Defaults,
    moe_intermediate: u64,
    shared: u64,
    routed: u64,
    top_k: u64,
    first_dense: u64,
    q_lora_rank: u64,
    /// Default `(n_group, topk_group)` of a group-limited router (`None`: transformers' router
    /// for the type has no groups).
    routing_groups: Option<(u64, u64)>,
}

fn deepseek(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
    d: &DeepseekDefaults,
) -> Result<TransformerSpec, ModelError> {
    let mut spec = decoder(f, name, family, &d.base)?;
    let latent = LatentAttention {
        q_lora_rank: if f.map.get("q_lora_rank").is_some_and(|v| v.is_null()) {
            None
        } else {
            Some(f.positive("q_lora_rank", Some(d.q_lora_rank))?)
        },
        kv_lora_rank: f.positive("kv_lora_rank", Some(512))?,
        qk_nope_head_dim: f.positive("qk_nope_head_dim", Some(128))?,
        qk_rope_head_dim: f.positive("qk_rope_head_dim", Some(64))?,
        v_head_dim: f.positive("v_head_dim", Some(128))?,
    };
    spec.attention = AttentionLayout::Latent(latent);
    spec.kv_heads = Some(spec.heads);
    spec.head_dim = Some(latent.qk_nope_head_dim + latent.qk_rope_head_dim);
    let attn = f.flag("attention_bias", false)?;
    (spec.qkv_bias, spec.o_bias) = (attn, attn);
    let routed = f.count("n_routed_experts", d.routed)?;
    let first_dense = f.count("first_k_dense_replace", d.first_dense)?;
    let freq = f.positive("moe_layer_freq", Some(1))?;
    let sparse = if routed == 0 {
        0
    } else {
        (first_dense..spec.layers)
            .filter(|i| i.is_multiple_of(freq))
            .count() as u64
    };
    let [dense_span, sparse_span] = layer_spans(spec.layers, |i| {
        routed > 0 && i >= first_dense && i.is_multiple_of(freq)
    });
    let moe_intermediate = f.positive("moe_intermediate_size", Some(d.moe_intermediate))?;
    let shared = f.count("n_shared_experts", d.shared)?;
    spec.mlp = MlpLayout::Experts(ExpertsSpec {
        experts: routed.max(1),
        top_k: f.positive("num_experts_per_tok", Some(d.top_k))?,
        intermediate: moe_intermediate,
        sparse_layers: sparse,
        dense_span,
        sparse_span,
        layout: ExpertLayout::Fused { bias: false },
        router_bias: false,
        routing_groups: match d.routing_groups {
            Some(defaults) => Some(f.routing_groups(routed.max(1), defaults)?),
            None => None,
        },
        shared: (shared > 0).then(|| SharedExperts {
            intermediate: moe_intermediate * shared,
            gate: false,
        }),
        peft_targets: Some(QWEN2_MOE_CONVERSION),
    });
    spec.block = BlockSpec {
        rotary_dim: Some(latent.qk_rope_head_dim),
        ..BlockSpec::DECODER
    };
    Ok(spec)
}

const V3: DeepseekDefaults = DeepseekDefaults {
    base: Defaults {
        hidden: 7168,
        intermediate: Some(18432),
        layers: 61,
        heads: 128,
        kv_heads: Some(128),
        head_dim: None,
        vocab: 129280,
        max_positions: 4096,
        tied: false,
    },
    moe_intermediate: 2048,
    shared: 1,
    routed: 256,
    top_k: 8,
    first_dense: 3,
    q_lora_rank: 1536,
    routing_groups: Some((8, 4)),
};

const V2: DeepseekDefaults = DeepseekDefaults {
    base: Defaults {
        hidden: 5120,
        intermediate: Some(12288),
        layers: 60,
        heads: 128,
        kv_heads: Some(128),
        head_dim: None,
        vocab: 102400,
        max_positions: 2048,
        tied: false,
    },
    moe_intermediate: 1536,
    shared: 2,
    routed: 160,
    top_k: 6,
    first_dense: 0,
    q_lora_rank: 1536,
    routing_groups: None,
};

pub const DEEPSEEK: FamilyReader = FamilyReader {
    model_types: &["deepseek_v3", "deepseek_v2"],
    read: |f, name, family| match family {
        "deepseek_v2" => deepseek(f, name, family, &V2),
        _ => deepseek(f, name, family, &V3),
    },
};

//! Qwen3 (q/k norms per head), Qwen3-MoE (routed experts, some layers dense) and Qwen2-MoE (a
//! shared expert with its own sigmoid gate); the language models of Qwen3-VL and Qwen3-VL-MoE
//! (`qwen3_vl_text`, `qwen3_vl_moe_text`: Qwen3's and Qwen3-MoE's modules).

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{
    BlockSpec, ExpertLayout, ExpertTargets, ExpertsSpec, LayerSpan, MlpLayout, QkNorm,
    SharedExperts, TransformerSpec, layer_spans,
};

const QWEN3_DEFAULTS: Defaults = Defaults {
    hidden: 4096,
    intermediate: Some(22016),
    layers: 32,
    heads: 32,
    kv_heads: Some(32),
    head_dim: Some(128),
    vocab: 151936,
    max_positions: 32768,
    tied: false,
};

fn qwen3(f: &Fields<'_>, name: &str, family: &'static str) -> Result<TransformerSpec, ModelError> {
    qwen3_with(f, name, family, &QWEN3_DEFAULTS)
}

fn qwen3_with(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
    d: &Defaults,
) -> Result<TransformerSpec, ModelError> {
    let mut spec = decoder(f, name, family, d)?;
    let attn = f.flag("attention_bias", false)?;
    (spec.qkv_bias, spec.o_bias) = (attn, attn);
    spec.block = BlockSpec {
        qk_norm: QkNorm::HeadDim,
        ..BlockSpec::DECODER
    };
    Ok(spec)
}

pub const QWEN3: FamilyReader = FamilyReader {
    model_types: &["qwen3"],
    read: qwen3,
};

/// Layers with experts, and the dense and sparse layers' spans ([`layer_spans`]): layer `i` is
/// sparse unless listed in `mlp_only_layers`, when `(i + 1) % decoder_sparse_step == 0`
/// (transformers' Qwen MoE decoder layer).
type SparseLayers = (u64, [Option<LayerSpan>; 2]);

fn sparse_layers(f: &Fields<'_>, layers: u64, experts: u64) -> Result<SparseLayers, ModelError> {
    let step = f.positive("decoder_sparse_step", Some(1))?;
    let dense = f.integers("mlp_only_layers")?;
    let sparse = |i: u64| experts > 0 && !dense.contains(&i) && (i + 1).is_multiple_of(step);
    let count = (0..layers).filter(|&i| sparse(i)).count() as u64;
    Ok((count, layer_spans(layers, sparse)))
}

/// The names peft 0.21 converts for model types whose transformers conversion pattern is
/// `qwen2_moe` (qwen3_moe, deepseek_v2/v3, ernie4_5_moe, ...; not qwen2_moe itself).
pub const QWEN2_MOE_CONVERSION: ExpertTargets = ExpertTargets {
    router: "gate",
    gate_up: &["gate_proj", "up_proj"],
    down: &["down_proj"],
};

/// Qwen3-MoE's defaults for absent expert fields: experts, top-k, expert width.
const QWEN3_MOE_EXPERTS: (u64, u64, u64) = (128, 8, 768);

pub fn qwen_experts(
    f: &Fields<'_>,
    spec: &TransformerSpec,
    shared: Option<SharedExperts>,
    peft_targets: Option<ExpertTargets>,
) -> Result<MlpLayout, ModelError> {
    qwen_experts_with(f, spec, shared, peft_targets, QWEN3_MOE_EXPERTS)
}

fn qwen_experts_with(
    f: &Fields<'_>,
    spec: &TransformerSpec,
    shared: Option<SharedExperts>,
    peft_targets: Option<ExpertTargets>,
    (experts_default, top_k, width): (u64, u64, u64),
) -> Result<MlpLayout, ModelError> {
    // transformers 5 writes `num_local_experts`; older configs `num_experts`.
    let experts = if f.has("num_local_experts") {
        f.positive("num_local_experts", None)?
    } else {
        f.positive("num_experts", Some(experts_default))?
    };
    let (sparse_layers, [dense_span, sparse_span]) = sparse_layers(f, spec.layers, experts)?;
    Ok(MlpLayout::Experts(ExpertsSpec {
        experts,
        top_k: f.positive("num_experts_per_tok", Some(top_k))?,
        intermediate: f.positive("moe_intermediate_size", Some(width))?,
        sparse_layers,
        dense_span,
        sparse_span,
        layout: ExpertLayout::Fused { bias: false },
        router_bias: false,
        routing_groups: None,
        shared,
        peft_targets,
    }))
}

pub const QWEN3_MOE: FamilyReader = FamilyReader {
    model_types: &["qwen3_moe"],
    read: |f, name, family| {
        let mut spec = qwen3(f, name, family)?;
        spec.mlp = qwen_experts(f, &spec, None, Some(QWEN2_MOE_CONVERSION))?;
        Ok(spec)
    },
};

pub const QWEN2_MOE: FamilyReader = FamilyReader {
    model_types: &["qwen2_moe"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2048,
            intermediate: Some(5632),
            layers: 24,
            heads: 16,
            kv_heads: Some(16),
            head_dim: None,
            vocab: 151936,
            max_positions: 32768,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.qkv_bias = f.flag("qkv_bias", true)?;
        let shared = SharedExperts {
            intermediate: f.positive("shared_expert_intermediate_size", Some(5632))?,
            gate: true,
        };
        // peft has no conversion for qwen2_moe: its experts and router are not adaptable.
        spec.mlp = qwen_experts(f, &spec, Some(shared), None)?;
        spec.names.shared_experts = "shared_expert";
        Ok(spec)
    },
};

/// Qwen3-VL's language model (`text_config` of `qwen3_vl`): Qwen3's modules.
pub const QWEN3_VL_TEXT: FamilyReader = FamilyReader {
    model_types: &["qwen3_vl_text"],
    read: |f, name, family| {
        let d = Defaults {
            max_positions: 128000,
            ..QWEN3_DEFAULTS
        };
        qwen3_with(f, name, family, &d)
    },
};

/// Qwen3-VL-MoE's language model (`text_config` of `qwen3_vl_moe`): Qwen3-MoE's modules
/// (Qwen3VLMoeTextConfig's defaults: 60 experts, top 4, width 1408). peft 0.21 has no name
/// conversion for this model type: its experts and router are not adaptable by name.
pub const QWEN3_VL_MOE_TEXT: FamilyReader = FamilyReader {
    model_types: &["qwen3_vl_moe_text"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2048,
            intermediate: Some(5632),
            layers: 24,
            heads: 16,
            kv_heads: Some(16),
            head_dim: Some(128),
            vocab: 151936,
            max_positions: 128000,
            tied: false,
        };
        let mut spec = qwen3_with(f, name, family, &d)?;
        spec.mlp = qwen_experts_with(f, &spec, None, None, (60, 4, 1408))?;
        Ok(spec)
    },
};

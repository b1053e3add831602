//! LLaMA and the families that keep its module names and block: Mistral, Ministral, Qwen2,
//! SmolLM3, ERNIE 4.5, EXAONE (transformers 5 reads `exaone` as LLaMA), and Mixtral's
//! mixture of experts.

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{
    ExpertLayout, ExpertTargets, ExpertsSpec, LayerSpan, MlpLayout, TransformerSpec,
};

fn llama(f: &Fields<'_>, name: &str, family: &'static str) -> Result<TransformerSpec, ModelError> {
    let mut spec = decoder(f, name, family, &Defaults::LLAMA)?;
    let attn = f.flag("attention_bias", false)?;
    (spec.qkv_bias, spec.o_bias) = (attn, attn);
    spec.mlp_bias = f.flag("mlp_bias", false)?;
    Ok(spec)
}

pub const LLAMA: FamilyReader = FamilyReader {
    model_types: &["llama", "exaone"],
    read: llama,
};

const MISTRAL_DEFAULTS: Defaults = Defaults {
    hidden: 4096,
    intermediate: Some(14336),
    layers: 32,
    heads: 32,
    kv_heads: Some(8),
    head_dim: None,
    vocab: 32000,
    max_positions: 131072,
    tied: false,
};

pub const MISTRAL: FamilyReader = FamilyReader {
    model_types: &["mistral", "ministral", "ministral3"],
    read: |f, name, family| decoder(f, name, family, &MISTRAL_DEFAULTS),
};

pub const QWEN2: FamilyReader = FamilyReader {
    model_types: &["qwen2"],
    read: |f, name, family| {
        let d = Defaults {
            intermediate: Some(22016),
            kv_heads: Some(32),
            vocab: 151936,
            max_positions: 32768,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        // Qwen2's q, k and v always carry a bias; o_proj never does.
        spec.qkv_bias = true;
        Ok(spec)
    },
};

/// The language models of Qwen2-VL and Qwen2.5-VL (`qwen2_vl_text`, `qwen2_5_vl_text`):
/// Qwen2's modules (biased q/k/v), with Qwen2VLTextConfig's defaults.
pub const QWEN2_VL_TEXT: FamilyReader = FamilyReader {
    model_types: &["qwen2_vl_text", "qwen2_5_vl_text"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 8192,
            intermediate: Some(29568),
            layers: 80,
            heads: 64,
            kv_heads: Some(8),
            head_dim: None,
            vocab: 152064,
            max_positions: 32768,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.qkv_bias = true;
        Ok(spec)
    },
};

pub const SMOLLM3: FamilyReader = FamilyReader {
    model_types: &["smollm3"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2048,
            intermediate: Some(11008),
            layers: 36,
            heads: 16,
            kv_heads: Some(4),
            vocab: 128256,
            max_positions: 32768,
            tied: true,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.mlp_bias = f.flag("mlp_bias", false)?;
        Ok(spec)
    },
};

pub const ERNIE4_5: FamilyReader = FamilyReader {
    model_types: &["ernie4_5"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 1024,
            intermediate: Some(3072),
            layers: 18,
            heads: 16,
            kv_heads: Some(2),
            head_dim: Some(128),
            vocab: 103424,
            max_positions: 131072,
            tied: true,
        };
        let mut spec = decoder(f, name, family, &d)?;
        let bias = f.flag("use_bias", false)?;
        (spec.qkv_bias, spec.o_bias, spec.mlp_bias) = (bias, bias, bias);
        Ok(spec)
    },
};

pub const EXAONE4: FamilyReader = FamilyReader {
    model_types: &["exaone4"],
    read: super::olmo::exaone4,
};

pub const MIXTRAL: FamilyReader = FamilyReader {
    model_types: &["mixtral"],
    read: |f, name, family| {
        let mut spec = decoder(f, name, family, &MISTRAL_DEFAULTS)?;
        spec.mlp = MlpLayout::Experts(ExpertsSpec {
            experts: f.positive("num_local_experts", Some(8))?,
            top_k: f.positive("num_experts_per_tok", Some(2))?,
            intermediate: spec.intermediate,
            sparse_layers: spec.layers,
            dense_span: None,
            sparse_span: Some(LayerSpan::all_sparse(spec.layers)),
            layout: ExpertLayout::Fused { bias: false },
            router_bias: false,
            routing_groups: None,
            shared: None,
            peft_targets: Some(ExpertTargets {
                router: "gate",
                gate_up: &["w1", "w3"],
                down: &["w2"],
            }),
        });
        Ok(spec)
    },
};

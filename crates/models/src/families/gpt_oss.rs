//! gpt-oss: attention with biases and learned sinks, a router with a bias (a custom module peft's
//! `all-linear` skips) and transformers-5 fused experts with per-expert biases, which peft 0.21
//! does not convert (not adaptable).

use super::FamilyReader;
use crate::config::{Defaults, decoder};
use ftbudget_core::{BlockSpec, ExpertLayout, ExpertsSpec, LayerSpan, MlpActivation, MlpLayout};

pub const GPT_OSS: FamilyReader = FamilyReader {
    model_types: &["gpt_oss"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2880,
            intermediate: Some(2880),
            layers: 36,
            heads: 64,
            kv_heads: Some(8),
            head_dim: Some(64),
            vocab: 201088,
            max_positions: 131072,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", true)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.mlp = MlpLayout::Experts(ExpertsSpec {
            experts: f.positive("num_local_experts", Some(128))?,
            top_k: f.positive("num_experts_per_tok", Some(4))?,
            intermediate: spec.intermediate,
            sparse_layers: spec.layers,
            dense_span: None,
            sparse_span: Some(LayerSpan::all_sparse(spec.layers)),
            layout: ExpertLayout::Fused { bias: true },
            router_bias: true,
            routing_groups: None,
            shared: None,
            peft_targets: None,
        });
        spec.names.router = "router";
        spec.block = BlockSpec {
            attention_sinks: true,
            mlp_activation: MlpActivation::ClampedSwiGlu,
            ..BlockSpec::DECODER
        };
        Ok(spec)
    },
};

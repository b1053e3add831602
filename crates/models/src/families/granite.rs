//! Granite (LLaMA's modules; its multipliers have no parameters) and GraniteMoE (routed experts
//! under `block_sparse_moe`, a custom router; peft 0.21 does not convert them: not adaptable).

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{ExpertLayout, ExpertsSpec, LayerSpan, MlpLayout, TransformerSpec};

fn granite(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
) -> Result<TransformerSpec, ModelError> {
    let mut spec = decoder(f, name, family, &Defaults::LLAMA)?;
    let attn = f.flag("attention_bias", false)?;
    (spec.qkv_bias, spec.o_bias) = (attn, attn);
    spec.mlp_bias = f.flag("mlp_bias", false)?;
    Ok(spec)
}

pub const GRANITE: FamilyReader = FamilyReader {
    model_types: &["granite"],
    read: granite,
};

pub const GRANITEMOE: FamilyReader = FamilyReader {
    model_types: &["granitemoe"],
    read: |f, name, family| {
        let mut spec = granite(f, name, family)?;
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
            peft_targets: None,
        });
        spec.names.mlp = "block_sparse_moe";
        spec.names.router = "router";
        Ok(spec)
    },
};

//! Phi-3 (fused `qkv_proj` and `gate_up_proj`, residual dropout) and Phi-1/2 (`phi`: q/k/v and
//! `dense` with biases, a plain `fc1`/`fc2` MLP, one LayerNorm feeding attention and MLP in
//! parallel, partial rotary, a biased lm_head).

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder, head_dim_of, rotary_dim};
use ftbudget_core::{
    AttentionLayout, BlockSpec, MlpActivation, MlpLayout, Naming, NormKind, NormPlacement, QkNorm,
    TransformerSpec,
};

pub const PHI3: FamilyReader = FamilyReader {
    model_types: &["phi3"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 3072,
            intermediate: Some(8192),
            vocab: 32064,
            max_positions: 4096,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.attention = AttentionLayout::FusedQkv;
        spec.mlp = MlpLayout::FusedGated;
        let factor = f.fraction("partial_rotary_factor", 1.0)?;
        spec.block = BlockSpec {
            residual_dropout: true,
            rotary_dim: rotary_dim(head_dim_of(&spec), factor),
            ..BlockSpec::DECODER
        };
        Ok(spec)
    },
};

fn phi(f: &Fields<'_>, name: &str, family: &'static str) -> Result<TransformerSpec, ModelError> {
    let d = Defaults {
        hidden: 2048,
        intermediate: Some(8192),
        layers: 24,
        heads: 32,
        kv_heads: None,
        head_dim: None,
        vocab: 51200,
        max_positions: 2048,
        tied: false,
    };
    let mut spec = decoder(f, name, family, &d)?;
    (spec.qkv_bias, spec.o_bias, spec.mlp_bias, spec.lm_head_bias) = (true, true, true, true);
    spec.norm = NormKind::LayerNorm { bias: true };
    spec.mlp = MlpLayout::Plain;
    spec.intermediate_multiple = 1;
    let factor = f.fraction("partial_rotary_factor", 0.5)?;
    spec.block = BlockSpec {
        norms: 1,
        norm_placement: NormPlacement::Parallel,
        residual_dropout: true,
        qk_norm: if f.flag("qk_layernorm", false)? {
            QkNorm::HeadDim
        } else {
            QkNorm::None
        },
        rotary_dim: rotary_dim(head_dim_of(&spec), factor),
        // PhiConfig's default `hidden_act`.
        mlp_activation: MlpActivation::GeluNewPython,
        ..BlockSpec::DECODER
    };
    spec.names = Naming {
        o: "dense",
        up: "fc1",
        down: "fc2",
        q_norm: "q_layernorm",
        k_norm: "k_layernorm",
        final_norm: "model.final_layernorm",
        ..Naming::LLAMA
    };
    Ok(spec)
}

pub const PHI: FamilyReader = FamilyReader {
    model_types: &["phi"],
    read: phi,
};

//! GLM-4: biased q/k/v, a fused `gate_up_proj`, four norms per block (before and after attention
//! and the MLP), partial rotary.

use super::FamilyReader;
use crate::config::{Defaults, decoder, head_dim_of, rotary_dim};
use ftbudget_core::{BlockSpec, MlpLayout, Naming, NormPlacement};

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

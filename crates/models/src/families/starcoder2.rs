//! StarCoder2: biased q/k/v/o (`use_bias`), a plain biased `c_fc`/`c_proj` MLP, LayerNorms
//! with bias, residual dropout, a tied head.

use super::FamilyReader;
use crate::config::{Defaults, decoder};
use ftbudget_core::{BlockSpec, MlpLayout, Naming, NormKind};

pub const STARCODER2: FamilyReader = FamilyReader {
    model_types: &["starcoder2"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 3072,
            intermediate: Some(12288),
            layers: 30,
            heads: 24,
            kv_heads: Some(2),
            head_dim: None,
            vocab: 49152,
            max_positions: 4096,
            tied: true,
        };
        let mut spec = decoder(f, name, family, &d)?;
        let bias = f.flag("use_bias", true)?;
        (spec.qkv_bias, spec.o_bias, spec.mlp_bias) = (bias, bias, bias);
        spec.norm = NormKind::LayerNorm { bias: true };
        spec.mlp = MlpLayout::Plain;
        spec.intermediate_multiple = 1;
        spec.block = BlockSpec {
            residual_dropout: true,
            ..BlockSpec::DECODER
        };
        spec.names = Naming {
            up: "c_fc",
            down: "c_proj",
            ..Naming::LLAMA
        };
        Ok(spec)
    },
};

//! Arcee (AFM): LLaMA's attention and norms with a plain MLP, `up_proj` -> ReLU² -> `down_proj`
//! (no gate).

use super::FamilyReader;
use crate::config::{Defaults, decoder};
use ftbudget_core::MlpLayout;

pub const ARCEE: FamilyReader = FamilyReader {
    model_types: &["arcee"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2560,
            intermediate: Some(18432),
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.mlp_bias = f.flag("mlp_bias", false)?;
        spec.mlp = MlpLayout::Plain;
        Ok(spec)
    },
};

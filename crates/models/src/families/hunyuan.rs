//! Hunyuan dense (`hunyuan_v1_dense`): LLaMA's modules with per-head q/k norms named
//! `query_layernorm` and `key_layernorm`, and `attention_bias` on q, k, v and o.

use super::FamilyReader;
use crate::config::{Defaults, decoder};
use ftbudget_core::{BlockSpec, Naming, QkNorm};

pub const HUNYUAN_V1_DENSE: FamilyReader = FamilyReader {
    model_types: &["hunyuan_v1_dense"],
    read: |f, name, family| {
        let d = Defaults {
            vocab: 290943,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.block = BlockSpec {
            qk_norm: QkNorm::HeadDim,
            ..BlockSpec::DECODER
        };
        spec.names = Naming {
            q_norm: "query_layernorm",
            k_norm: "key_layernorm",
            ..Naming::LLAMA
        };
        Ok(spec)
    },
};

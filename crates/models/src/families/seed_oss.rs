//! Seed-OSS: LLaMA's modules with biased q/k/v (`attention_bias`, on by default), an
//! output-projection bias of its own (`attention_out_bias`) and `mlp_bias`.

use super::FamilyReader;
use crate::config::{Defaults, decoder};

pub const SEED_OSS: FamilyReader = FamilyReader {
    model_types: &["seed_oss"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 4096,
            intermediate: Some(27648),
            layers: 64,
            heads: 80,
            kv_heads: Some(8),
            head_dim: Some(128),
            vocab: 155136,
            max_positions: 524288,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.qkv_bias = f.flag("attention_bias", true)?;
        spec.o_bias = f.flag("attention_out_bias", false)?;
        spec.mlp_bias = f.flag("mlp_bias", false)?;
        Ok(spec)
    },
};

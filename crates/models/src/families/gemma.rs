//! Gemma, Gemma 2 and Gemma 3 (text): LLaMA's modules with an explicit `head_dim` and a tied
//! head; Gemma 2 and 3 add a norm before and after each sublayer (four per block), Gemma 2
//! soft-caps attention logits, Gemma 3 normalizes queries and keys per head.

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{BlockSpec, NormPlacement, QkNorm, TransformerSpec};

fn gemma_common(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
    d: &Defaults,
) -> Result<TransformerSpec, ModelError> {
    let mut spec = decoder(f, name, family, d)?;
    let attn = f.flag("attention_bias", false)?;
    (spec.qkv_bias, spec.o_bias) = (attn, attn);
    Ok(spec)
}

pub const GEMMA: FamilyReader = FamilyReader {
    model_types: &["gemma"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 3072,
            intermediate: Some(24576),
            layers: 28,
            heads: 16,
            kv_heads: Some(16),
            head_dim: Some(256),
            vocab: 256000,
            max_positions: 8192,
            tied: true,
        };
        gemma_common(f, name, family, &d)
    },
};

const SANDWICH: BlockSpec = BlockSpec {
    norms: 4,
    norm_placement: NormPlacement::Sandwich,
    ..BlockSpec::DECODER
};

pub const GEMMA2: FamilyReader = FamilyReader {
    model_types: &["gemma2"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2304,
            intermediate: Some(9216),
            layers: 26,
            heads: 8,
            kv_heads: Some(4),
            head_dim: Some(256),
            vocab: 256000,
            max_positions: 8192,
            tied: true,
        };
        let mut spec = gemma_common(f, name, family, &d)?;
        spec.block = BlockSpec {
            // Gemma2Config: attn_logit_softcapping 50.0, final_logit_softcapping 30.0 by default.
            logit_softcap: f.has("attn_logit_softcapping")
                || !f.map.contains_key("attn_logit_softcapping"),
            final_logit_softcap: f.has("final_logit_softcapping")
                || !f.map.contains_key("final_logit_softcapping"),
            ..SANDWICH
        };
        Ok(spec)
    },
};

pub const GEMMA3_TEXT: FamilyReader = FamilyReader {
    model_types: &["gemma3_text"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2304,
            intermediate: Some(9216),
            layers: 26,
            heads: 8,
            kv_heads: Some(4),
            head_dim: Some(256),
            vocab: 262208,
            max_positions: 131072,
            tied: true,
        };
        let mut spec = gemma_common(f, name, family, &d)?;
        spec.block = BlockSpec {
            qk_norm: QkNorm::HeadDim,
            // Gemma3TextConfig: both soft-cappings default to None.
            logit_softcap: f.has("attn_logit_softcapping"),
            final_logit_softcap: f.has("final_logit_softcapping"),
            ..SANDWICH
        };
        Ok(spec)
    },
};

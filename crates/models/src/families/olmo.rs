//! OLMo 2 and EXAONE 4: norms after attention and after the MLP (no pre-norms), and q/k norms
//! (OLMo 2 over all heads at once, EXAONE 4 per head).

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Defaults, Fields, decoder};
use ftbudget_core::{BlockSpec, Naming, NormPlacement, QkNorm, TransformerSpec};

const POST_NAMES: Naming = Naming {
    block_norms: [
        "post_attention_layernorm",
        "post_feedforward_layernorm",
        "",
        "",
    ],
    ..Naming::LLAMA
};

pub const OLMO2: FamilyReader = FamilyReader {
    model_types: &["olmo2"],
    read: |f, name, family| {
        let d = Defaults {
            vocab: 50304,
            ..Defaults::LLAMA
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.block = BlockSpec {
            norm_placement: NormPlacement::Post,
            qk_norm: QkNorm::AllHeads,
            ..BlockSpec::DECODER
        };
        spec.names = POST_NAMES;
        Ok(spec)
    },
};

pub fn exaone4(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
) -> Result<TransformerSpec, ModelError> {
    let d = Defaults {
        hidden: 4096,
        intermediate: Some(16384),
        layers: 32,
        heads: 32,
        kv_heads: Some(32),
        head_dim: None,
        vocab: 102400,
        max_positions: 2048,
        tied: false,
    };
    let mut spec = decoder(f, name, family, &d)?;
    spec.block = BlockSpec {
        norm_placement: NormPlacement::Post,
        qk_norm: QkNorm::HeadDim,
        ..BlockSpec::DECODER
    };
    spec.names = POST_NAMES;
    Ok(spec)
}

//! Cohere (Command R) and Cohere2: one bias-free LayerNorm feeding attention and the MLP in
//! parallel, a tied head, optional q/k LayerNorms over all heads (`use_qk_norm`).

use super::FamilyReader;
use crate::config::{Defaults, decoder};
use ftbudget_core::{BlockSpec, NormKind, NormPlacement, QkNorm};

pub const COHERE: FamilyReader = FamilyReader {
    model_types: &["cohere", "cohere2"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 8192,
            intermediate: Some(22528),
            layers: 40,
            heads: 64,
            kv_heads: None,
            head_dim: None,
            vocab: 256000,
            max_positions: 8192,
            tied: true,
        };
        let mut spec = decoder(f, name, family, &d)?;
        let attn = f.flag("attention_bias", false)?;
        (spec.qkv_bias, spec.o_bias) = (attn, attn);
        spec.norm = NormKind::LayerNorm { bias: false };
        spec.block = BlockSpec {
            norms: 1,
            norm_placement: NormPlacement::Parallel,
            qk_norm: if f.flag("use_qk_norm", false)? {
                QkNorm::AllHeads
            } else {
                QkNorm::None
            },
            ..BlockSpec::DECODER
        };
        Ok(spec)
    },
};

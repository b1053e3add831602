//! StableLM: LayerNorms with bias, a gated MLP, optional q/k/v biases, optional per-head q/k
//! LayerNorms (one bias-free tensor per head), optional parallel residual, partial rotary.

use super::FamilyReader;
use crate::config::{Defaults, decoder, head_dim_of, rotary_dim};
use ftbudget_core::{BlockSpec, NormKind, NormPlacement, QkNorm};

pub const STABLELM: FamilyReader = FamilyReader {
    model_types: &["stablelm"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 2560,
            intermediate: Some(6912),
            layers: 32,
            heads: 32,
            kv_heads: Some(32),
            head_dim: None,
            vocab: 50304,
            max_positions: 4096,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.qkv_bias = f.flag("use_qkv_bias", false)?;
        spec.norm = NormKind::LayerNorm { bias: true };
        let factor = f.fraction("partial_rotary_factor", 0.25)?;
        let parallel = f.flag("use_parallel_residual", false)?;
        spec.block = BlockSpec {
            norms: if parallel { 1 } else { 2 },
            norm_placement: if parallel {
                NormPlacement::Parallel
            } else {
                NormPlacement::Pre
            },
            qk_norm: if f.flag("qk_layernorm", false)? {
                QkNorm::OneTensorPerHead
            } else {
                QkNorm::None
            },
            residual_dropout: true,
            rotary_dim: rotary_dim(head_dim_of(&spec), factor),
            ..BlockSpec::DECODER
        };
        spec.names.q_norm = "q_layernorm";
        spec.names.k_norm = "k_layernorm";
        Ok(spec)
    },
};

//! GPT-NeoX (Pythia): a fused biased `query_key_value`, `dense`, a plain biased
//! `dense_h_to_4h`/`dense_4h_to_h` MLP, two LayerNorms with bias (read in parallel with
//! `use_parallel_residual`), partial rotary.

use super::FamilyReader;
use crate::config::{Defaults, decoder, head_dim_of, rotary_dim};
use ftbudget_core::{AttentionLayout, BlockSpec, MlpLayout, Naming, NormKind, NormPlacement};

pub const GPT_NEOX: FamilyReader = FamilyReader {
    model_types: &["gpt_neox"],
    read: |f, name, family| {
        let d = Defaults {
            hidden: 6144,
            intermediate: Some(24576),
            layers: 44,
            heads: 64,
            kv_heads: None,
            head_dim: None,
            vocab: 50432,
            max_positions: 2048,
            tied: false,
        };
        let mut spec = decoder(f, name, family, &d)?;
        spec.kv_heads = Some(spec.heads);
        let attn = f.flag("attention_bias", true)?;
        (spec.qkv_bias, spec.o_bias, spec.mlp_bias) = (attn, attn, true);
        spec.norm = NormKind::LayerNorm { bias: true };
        spec.attention = AttentionLayout::FusedQkv;
        spec.mlp = MlpLayout::Plain;
        spec.intermediate_multiple = 1;
        let factor = if f.has("partial_rotary_factor") {
            f.fraction("partial_rotary_factor", 0.25)?
        } else {
            f.fraction("rotary_pct", 0.25)?
        };
        let parallel = f.flag("use_parallel_residual", true)?;
        spec.block = BlockSpec {
            norm_placement: if parallel {
                NormPlacement::Parallel
            } else {
                NormPlacement::Pre
            },
            residual_dropout: true,
            rotary_dim: rotary_dim(head_dim_of(&spec), factor),
            ..BlockSpec::DECODER
        };
        spec.names = Naming {
            embed: "gpt_neox.embed_in",
            layers: "gpt_neox.layers",
            attention: "attention",
            qkv: "query_key_value",
            o: "dense",
            up: "dense_h_to_4h",
            down: "dense_4h_to_h",
            final_norm: "gpt_neox.final_layer_norm",
            ..Naming::LLAMA
        };
        Ok(spec)
    },
};

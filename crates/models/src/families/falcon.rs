//! Falcon: a fused `query_key_value` (multi-query, or grouped with the new decoder
//! architecture), `dense`, a plain `dense_h_to_4h`/`dense_4h_to_h` MLP, LayerNorms with bias;
//! attention and MLP in parallel (one norm, or `ln_attn` and `ln_mlp` in the new architecture)
//! or in sequence.

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Fields, field_err};
use ftbudget_core::{
    AttentionLayout, BlockSpec, Family, MlpLayout, Naming, NormKind, NormPlacement, PositionKind,
    TransformerSpec,
};

const NAMES: Naming = Naming {
    embed: "transformer.word_embeddings",
    layers: "transformer.h",
    attention: "self_attention",
    qkv: "query_key_value",
    o: "dense",
    up: "dense_h_to_4h",
    down: "dense_4h_to_h",
    final_norm: "transformer.ln_f",
    ..Naming::LLAMA
};

fn falcon(f: &Fields<'_>, name: &str, family: &'static str) -> Result<TransformerSpec, ModelError> {
    let hidden = f.positive("hidden_size", Some(4544))?;
    let heads = f.positive("num_attention_heads", Some(71))?;
    let new_arch = f.flag("new_decoder_architecture", false)?;
    let kv_heads = if new_arch {
        f.positive("num_kv_heads", Some(heads))?
    } else if f.flag("multi_query", true)? {
        1
    } else {
        heads
    };
    let parallel = f.flag("parallel_attn", true)?;
    let (norms, placement, block_norms) = if new_arch {
        match f.positive("num_ln_in_parallel_attn", Some(2))? {
            2 => (2, NormPlacement::Parallel, ["ln_attn", "ln_mlp", "", ""]),
            1 => (1, NormPlacement::Parallel, ["input_layernorm", "", "", ""]),
            n => {
                return Err(field_err(
                    "num_ln_in_parallel_attn",
                    format!("must be 1 or 2 (got {n})"),
                ));
            }
        }
    } else if parallel {
        (1, NormPlacement::Parallel, ["input_layernorm", "", "", ""])
    } else {
        (
            2,
            NormPlacement::Pre,
            ["input_layernorm", "post_attention_layernorm", "", ""],
        )
    };
    let intermediate = match f.optional("ffn_hidden_size")? {
        Some(n) => n,
        None => hidden
            .checked_mul(4)
            .ok_or_else(|| field_err("hidden_size", "size overflows"))?,
    };
    let bias = f.flag("bias", false)?;
    Ok(TransformerSpec {
        name: name.to_string(),
        family: Family::new(family),
        hidden,
        layers: f.positive("num_hidden_layers", Some(32))?,
        heads,
        kv_heads: Some(kv_heads),
        head_dim: None,
        intermediate,
        vocab: f.positive("vocab_size", Some(65024))?,
        max_positions: f.positive("max_position_embeddings", Some(2048))?,
        tied_embeddings: f.flag("tie_word_embeddings", true)?,
        qkv_bias: bias,
        o_bias: bias,
        mlp_bias: bias,
        lm_head_bias: false,
        norm: NormKind::LayerNorm { bias: true },
        positions: PositionKind::Rotary,
        attention: AttentionLayout::FusedQkv,
        mlp: MlpLayout::Plain,
        block: BlockSpec {
            norms,
            norm_placement: placement,
            residual_dropout: true,
            ..BlockSpec::DECODER
        },
        names: Naming {
            block_norms,
            ..NAMES
        },
        intermediate_multiple: 1,
    })
}

pub const FALCON: FamilyReader = FamilyReader {
    model_types: &["falcon"],
    read: falcon,
};

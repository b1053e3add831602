//! GPT-2: `n_embd`, `n_layer`, `n_head`, `n_inner` (null: 4 x n_embd), `n_positions`; Conv1D
//! layers with biases, LayerNorm with bias, learned positions, tied lm_head by default.

use super::FamilyReader;
use crate::ModelError;
use crate::config::{Fields, field_err};
use ftbudget_core::{
    ActivationRecipe, AttentionLayout, BlockSpec, Family, MlpActivation, MlpLayout, Naming,
    NormKind, PositionKind, TransformerSpec,
};

const NAMES: Naming = Naming {
    embed: "transformer.wte",
    positions: "transformer.wpe",
    layers: "transformer.h",
    attention: "attn",
    qkv: "c_attn",
    o: "c_proj",
    up: "c_fc",
    down: "c_proj",
    block_norms: ["ln_1", "ln_2", "", ""],
    final_norm: "transformer.ln_f",
    ..Naming::LLAMA
};

fn gpt2(f: &Fields<'_>, name: &str, family: &'static str) -> Result<TransformerSpec, ModelError> {
    // GPT2Config maps hidden_size etc. onto the n_* fields; accept either spelling.
    let pick = |key: &str, alias: &str, default: u64| -> Result<u64, ModelError> {
        if f.has(key) {
            f.positive(key, None)
        } else {
            f.positive(alias, Some(default))
        }
    };
    let hidden = pick("n_embd", "hidden_size", 768)?;
    let intermediate = match f.optional("n_inner")? {
        Some(n) => n,
        None => hidden
            .checked_mul(4)
            .ok_or_else(|| field_err("n_embd", "size overflows"))?,
    };
    Ok(TransformerSpec {
        name: name.to_string(),
        family: Family::new(family),
        hidden,
        layers: pick("n_layer", "num_hidden_layers", 12)?,
        heads: pick("n_head", "num_attention_heads", 12)?,
        kv_heads: None,
        head_dim: None,
        intermediate,
        vocab: f.positive("vocab_size", Some(50257))?,
        max_positions: pick("n_positions", "max_position_embeddings", 1024)?,
        tied_embeddings: f.flag("tie_word_embeddings", true)?,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        lm_head_bias: false,
        norm: NormKind::LayerNorm { bias: true },
        positions: PositionKind::Learned,
        attention: AttentionLayout::FusedQkv,
        mlp: MlpLayout::Plain,
        block: BlockSpec {
            residual_dropout: true,
            conv1d: true,
            mlp_activation: MlpActivation::GeluNewPython,
            recipe: ActivationRecipe::Gpt2,
            ..BlockSpec::DECODER
        },
        names: NAMES,
        intermediate_multiple: 1,
    })
}

pub const GPT2: FamilyReader = FamilyReader {
    model_types: &["gpt2"],
    read: gpt2,
};

/// GPTBigCode (StarCoder, SantaCoder): GPT-2's names and block on `nn.Linear` layers, with
/// multi-query attention by default (`multi_query`: one key/value head, so `c_attn` is
/// `hidden -> hidden + 2 x head_dim`).
pub const GPT_BIGCODE: FamilyReader = FamilyReader {
    model_types: &["gpt_bigcode"],
    read: |f, name, family| {
        let mut spec = gpt2(f, name, family)?;
        if f.flag("multi_query", true)? {
            spec.kv_heads = Some(1);
        }
        spec.block = BlockSpec {
            residual_dropout: true,
            ..BlockSpec::DECODER
        };
        Ok(spec)
    },
};

//! Hugging Face `config.json` -> [`TransformerSpec`], with the defaults of transformers 5 for
//! every optional field of each supported `model_type`.

use crate::ModelError;
use ftbudget_core::{AttentionLayout, Family, MlpLayout, NormKind, PositionKind, TransformerSpec};
use serde_json::{Map, Value};

/// The `model_type` values understood, in the order error messages list them.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "llama", "mistral", "qwen2", "gemma", "gpt2", "phi3", "mixtral",
];

/// The library defaults of one model type (transformers 5.24 `*Config()` values).
struct Defaults {
    hidden: u64,
    intermediate: Option<u64>,
    layers: u64,
    heads: u64,
    /// `None`: as many as `num_attention_heads`.
    kv_heads: Option<u64>,
    head_dim: Option<u64>,
    vocab: u64,
    max_positions: u64,
    tied: bool,
}

fn field_err(field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// A positive integer field; `null` or absent takes `default` (an error when there is none).
    fn positive(&self, key: &str, default: Option<u64>) -> Result<u64, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => default.ok_or_else(|| field_err(key, "is missing")),
            Some(v) => match v.as_u64() {
                Some(0) => Err(field_err(key, "must be at least 1 (got 0)")),
                Some(n) => Ok(n),
                None => Err(field_err(
                    key,
                    format!("must be a positive integer (got {v})"),
                )),
            },
        }
    }

    fn optional(&self, key: &str) -> Result<Option<u64>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.positive(key, None).map(Some),
        }
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(field_err(key, format!("must be true or false (got {v})"))),
        }
    }
}

/// Parse the text of a `config.json`; `name` labels the model in reports.
pub fn spec_from_config_json(text: &str, name: &str) -> Result<TransformerSpec, ModelError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
        what: "config.json".into(),
        reason: e.to_string(),
    })?;
    let map = value
        .as_object()
        .ok_or_else(|| field_err("config.json", "must be a JSON object"))?;
    let f = Fields { map };
    let model_type = match map.get("model_type") {
        Some(Value::String(s)) => s.as_str(),
        None => return Err(field_err("model_type", "is missing")),
        Some(v) => {
            return Err(field_err(
                "model_type",
                format!("must be a string (got {v})"),
            ));
        }
    };
    let family = match model_type {
        "llama" => Family::Llama,
        "mistral" => Family::Mistral,
        "qwen2" => Family::Qwen2,
        "gemma" => Family::Gemma,
        "gpt2" => Family::Gpt2,
        "phi3" => Family::Phi3,
        "mixtral" => Family::Mixtral,
        other => {
            return Err(ModelError::UnknownModelType {
                model_type: other.to_string(),
                supported: SUPPORTED_MODEL_TYPES.join(", "),
            });
        }
    };
    if family == Family::Gpt2 {
        return gpt2(&f, name);
    }
    let d = match family {
        Family::Llama => Defaults {
            hidden: 4096,
            intermediate: Some(11008),
            layers: 32,
            heads: 32,
            kv_heads: None,
            head_dim: None,
            vocab: 32000,
            max_positions: 2048,
            tied: false,
        },
        Family::Mistral => Defaults {
            hidden: 4096,
            intermediate: Some(14336),
            layers: 32,
            heads: 32,
            kv_heads: Some(8),
            head_dim: None,
            vocab: 32000,
            max_positions: 131072,
            tied: false,
        },
        Family::Qwen2 => Defaults {
            hidden: 4096,
            intermediate: Some(22016),
            layers: 32,
            heads: 32,
            kv_heads: Some(32),
            head_dim: None,
            vocab: 151936,
            max_positions: 32768,
            tied: false,
        },
        Family::Gemma => Defaults {
            hidden: 3072,
            intermediate: Some(24576),
            layers: 28,
            heads: 16,
            kv_heads: Some(16),
            head_dim: Some(256),
            vocab: 256000,
            max_positions: 8192,
            tied: true,
        },
        Family::Phi3 => Defaults {
            hidden: 3072,
            intermediate: Some(8192),
            layers: 32,
            heads: 32,
            kv_heads: None,
            head_dim: None,
            vocab: 32064,
            max_positions: 4096,
            tied: false,
        },
        _ => Defaults {
            // Mixtral.
            hidden: 4096,
            intermediate: Some(14336),
            layers: 32,
            heads: 32,
            kv_heads: Some(8),
            head_dim: None,
            vocab: 32000,
            max_positions: 131072,
            tied: false,
        },
    };
    let heads = f.positive("num_attention_heads", Some(d.heads))?;
    // Absent: the config class default. Null: transformers sets one per attention head.
    let kv_heads = match map.get("num_key_value_heads") {
        None => d.kv_heads.unwrap_or(heads),
        Some(_) => f.optional("num_key_value_heads")?.unwrap_or(heads),
    };
    let head_dim = f.optional("head_dim")?.or(d.head_dim);
    // Bias switches as each implementation reads them (hard-coded ones are not config fields).
    let (qkv_bias, o_bias, mlp_bias) = match family {
        Family::Llama => {
            let attn = f.flag("attention_bias", false)?;
            (attn, attn, f.flag("mlp_bias", false)?)
        }
        Family::Gemma => {
            let attn = f.flag("attention_bias", false)?;
            (attn, attn, false)
        }
        Family::Qwen2 => (true, false, false),
        _ => (false, false, false),
    };
    let mlp = match family {
        Family::Phi3 => MlpLayout::FusedGated,
        Family::Mixtral => MlpLayout::Experts {
            experts: f.positive("num_local_experts", Some(8))?,
            top_k: f.positive("num_experts_per_tok", Some(2))?,
        },
        _ => MlpLayout::Gated,
    };
    Ok(TransformerSpec {
        name: name.to_string(),
        family,
        hidden: f.positive("hidden_size", Some(d.hidden))?,
        layers: f.positive("num_hidden_layers", Some(d.layers))?,
        heads,
        kv_heads: Some(kv_heads),
        head_dim,
        intermediate: f.positive("intermediate_size", d.intermediate)?,
        vocab: f.positive("vocab_size", Some(d.vocab))?,
        max_positions: f.positive("max_position_embeddings", Some(d.max_positions))?,
        tied_embeddings: f.flag("tie_word_embeddings", d.tied)?,
        qkv_bias,
        o_bias,
        mlp_bias,
        norm: NormKind::RmsNorm,
        positions: PositionKind::Rotary,
        attention: if family == Family::Phi3 {
            AttentionLayout::FusedQkv
        } else {
            AttentionLayout::Separate
        },
        mlp,
    })
}

/// GPT-2: `n_embd`, `n_layer`, `n_head`, `n_inner` (null: 4 x n_embd), `n_positions`; Conv1D
/// layers with biases, LayerNorm with bias, learned positions, tied lm_head by default.
fn gpt2(f: &Fields<'_>, name: &str) -> Result<TransformerSpec, ModelError> {
    // GPT2Config maps hidden_size etc. onto the n_* fields; accept either spelling.
    let pick = |key: &str, alias: &str, default: u64| -> Result<u64, ModelError> {
        if f.map.get(key).is_some_and(|v| !v.is_null()) {
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
        family: Family::Gpt2,
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
        norm: NormKind::LayerNorm { bias: true },
        positions: PositionKind::Learned,
        attention: AttentionLayout::FusedQkv,
        mlp: MlpLayout::Plain,
    })
}

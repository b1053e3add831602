//! Hugging Face `config.json` -> [`TransformerSpec`]: the JSON and its fields, the nesting of
//! multimodal configs (`text_config`), and the dispatch to the family that reads each
//! `model_type` (see [`crate::families`]).

use crate::ModelError;
use crate::families;
use ftbudget_core::{
    AttentionLayout, BlockSpec, Family, MlpActivation, MlpLayout, Naming, NormKind, PositionKind,
    SlidingWindow, TransformerSpec,
};
use serde_json::{Map, Value};

/// The `model_type` values understood, in the order error messages list them.
pub fn supported_model_types() -> Vec<&'static str> {
    families::supported_model_types()
}

/// A config read into a spec, with what the reader wants the user told (a vision tower left out).
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub spec: TransformerSpec,
    pub notes: Vec<String>,
}

pub(crate) fn field_err(field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Typed access to a config object's fields; every error names the field.
pub struct Fields<'a> {
    pub(crate) map: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// Is the field present and not null?
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// A positive integer field; `null` or absent takes `default` (an error when there is none).
    pub fn positive(&self, key: &str, default: Option<u64>) -> Result<u64, ModelError> {
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

    /// A group-limited router's `(n_group, topk_group)` (DeepSeek-V3, GLM-4.5) over `experts`
    /// routed experts: `n_group` divides the experts and `topk_group` is at most `n_group`.
    pub fn routing_groups(
        &self,
        experts: u64,
        (groups, top): (u64, u64),
    ) -> Result<(u32, u32), ModelError> {
        let groups = self.positive("n_group", Some(groups))?;
        let top = self.positive("topk_group", Some(top))?;
        if !experts.is_multiple_of(groups) {
            return Err(field_err(
                "n_group",
                format!("must divide the {experts} routed experts (got {groups})"),
            ));
        }
        if top > groups {
            return Err(field_err(
                "topk_group",
                format!("must be at most n_group = {groups} (got {top})"),
            ));
        }
        // Both are at most `experts`, itself bounded when the shape is checked; saturate anyway.
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok((narrow(groups), narrow(top)))
    }

    /// A non-negative integer field (0 allowed).
    pub fn count(&self, key: &str, default: u64) -> Result<u64, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| field_err(key, format!("must be a non-negative integer (got {v})"))),
        }
    }

    pub fn optional(&self, key: &str) -> Result<Option<u64>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.positive(key, None).map(Some),
        }
    }

    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(field_err(key, format!("must be true or false (got {v})"))),
        }
    }

    /// A number in `[0, 1]` (a fraction such as `partial_rotary_factor`); transformers 5 may
    /// keep rotary settings inside `rope_parameters`.
    pub fn fraction(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        let nested = self
            .map
            .get("rope_parameters")
            .and_then(|r| r.as_object())
            .and_then(|r| r.get(key));
        match self.map.get(key).filter(|v| !v.is_null()).or(nested) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
                _ => Err(field_err(
                    key,
                    format!("must be a number from 0 to 1 (got {v})"),
                )),
            },
        }
    }

    /// A string field, if present.
    pub fn string(&self, key: &str) -> Result<Option<&str>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(field_err(key, format!("must be a string (got {v})"))),
        }
    }

    /// A list of strings (`layer_types`), if present.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&str>>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        field_err(key, format!("must be a list of strings (got {v})"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(field_err(key, format!("must be a list (got {v})"))),
        }
    }

    /// A list of non-negative integers (`mlp_only_layers`), empty when absent.
    pub fn integers(&self, key: &str) -> Result<Vec<u64>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64().ok_or_else(|| {
                        field_err(key, format!("must be a list of integers (got {v})"))
                    })
                })
                .collect(),
            Some(v) => Err(field_err(key, format!("must be a list (got {v})"))),
        }
    }
}

/// The library defaults of one model type (transformers 5.24 `*Config()` values).
pub struct Defaults {
    pub hidden: u64,
    pub intermediate: Option<u64>,
    pub layers: u64,
    pub heads: u64,
    /// `None`: as many as `num_attention_heads`.
    pub kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied: bool,
}

impl Defaults {
    /// LlamaConfig's.
    pub const LLAMA: Defaults = Defaults {
        hidden: 4096,
        intermediate: Some(11008),
        layers: 32,
        heads: 32,
        kv_heads: None,
        head_dim: None,
        vocab: 32000,
        max_positions: 2048,
        tied: false,
    };
}

/// The fields every LLaMA-like config has, read with `d` for absent ones, into a LLaMA-style
/// spec (RMSNorm, RoPE, separate q/k/v/o, gated MLP, no biases) that the family then adjusts.
pub fn decoder(
    f: &Fields<'_>,
    name: &str,
    family: &'static str,
    d: &Defaults,
) -> Result<TransformerSpec, ModelError> {
    let heads = f.positive("num_attention_heads", Some(d.heads))?;
    // Absent: the config class default. Null: transformers sets one per attention head.
    let kv_heads = match f.map.get("num_key_value_heads") {
        None => d.kv_heads.unwrap_or(heads),
        Some(_) => f.optional("num_key_value_heads")?.unwrap_or(heads),
    };
    Ok(TransformerSpec {
        name: name.to_string(),
        family: Family::new(family),
        hidden: f.positive("hidden_size", Some(d.hidden))?,
        layers: f.positive("num_hidden_layers", Some(d.layers))?,
        heads,
        kv_heads: Some(kv_heads),
        head_dim: f.optional("head_dim")?.or(d.head_dim),
        intermediate: f.positive("intermediate_size", d.intermediate)?,
        vocab: f.positive("vocab_size", Some(d.vocab))?,
        max_positions: f.positive("max_position_embeddings", Some(d.max_positions))?,
        tied_embeddings: f.flag("tie_word_embeddings", d.tied)?,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        lm_head_bias: false,
        norm: NormKind::RmsNorm,
        positions: PositionKind::Rotary,
        attention: AttentionLayout::Separate,
        mlp: MlpLayout::Gated,
        block: BlockSpec::DECODER,
        names: Naming::LLAMA,
        intermediate_multiple: 256,
    })
}

/// Which layers of a family use sliding-window attention when config.json lists no
/// `layer_types` (transformers 5 writes the list; older configs leave it to the config class).
#[derive(Debug, Clone, Copy)]
pub enum SlidingLayers {
    /// Every layer once `sliding_window` is set (Mistral, Ministral, Mixtral, Phi-3,
    /// Starcoder2).
    All,
    /// Layer `i` slides unless `(i + 1) % n == 0`, with `n` from `pattern_key` when the config
    /// gives it (Gemma 3's `sliding_window_pattern`, 6; Cohere 2's and EXAONE 4's, 4; OLMo 3: 4).
    AllButEvery {
        n: u64,
        pattern_key: Option<&'static str>,
    },
    /// The even layers (Gemma 2, gpt-oss).
    Even,
    /// Qwen2's rule (Qwen3, the Qwen MoEs, SmolLM3): with `use_sliding_window`, the layers from
    /// `max_window_layers` on.
    FromMaxWindowLayers { default_max_window_layers: u64 },
}

/// The sliding-window layers of a config of `layers` layers: the window (`sliding_window`, or
/// the config class's `default_window` when the field is absent; null or 0: none) and how many
/// layers use it, counted in `layer_types` when the config lists them, else by the family's
/// rule.
pub fn sliding_window(
    f: &Fields<'_>,
    layers: u64,
    default_window: Option<u64>,
    rule: SlidingLayers,
) -> Result<Option<SlidingWindow>, ModelError> {
    let window = if f.map.contains_key("sliding_window") {
        f.count("sliding_window", 0)?
    } else {
        default_window.unwrap_or(0)
    };
    if window == 0 {
        return Ok(None);
    }
    let sliding = match f.strings("layer_types")? {
        Some(types) => {
            if types.len() as u64 != layers {
                return Err(field_err(
                    "layer_types",
                    format!(
                        "lists {} layers where num_hidden_layers is {layers}",
                        types.len()
                    ),
                ));
            }
            types.iter().filter(|t| **t == "sliding_attention").count() as u64
        }
        None => match rule {
            SlidingLayers::All => layers,
            SlidingLayers::AllButEvery { n, pattern_key } => {
                let n = match pattern_key {
                    Some(key) => f.positive(key, Some(n))?,
                    None => n,
                };
                layers - layers / n
            }
            SlidingLayers::Even => layers.div_ceil(2),
            SlidingLayers::FromMaxWindowLayers {
                default_max_window_layers,
            } => {
                if f.flag("use_sliding_window", false)? {
                    layers
                        - f.count("max_window_layers", default_max_window_layers)?
                            .min(layers)
                } else {
                    0
                }
            }
        },
    };
    Ok((sliding > 0).then_some(SlidingWindow {
        window,
        layers: sliding,
    }))
}

/// The rotary dimensions of a partially rotary head (`partial_rotary_factor`), `None` when the
/// whole head rotates.
pub fn rotary_dim(head_dim: u64, factor: f64) -> Option<u64> {
    let dim = (head_dim as f64 * factor) as u64;
    (dim < head_dim).then_some(dim)
}

/// The head dimension a spec resolves to (for partial rotary).
pub fn head_dim_of(spec: &TransformerSpec) -> u64 {
    spec.head_dim
        .unwrap_or(spec.hidden / spec.heads.max(1))
        .max(1)
}

/// Parse the text of a `config.json`; `name` labels the model in reports.
pub fn spec_from_config_json(text: &str, name: &str) -> Result<TransformerSpec, ModelError> {
    read_config_json(text, name).map(|r| r.spec)
}

/// Parse the text of a `config.json` with the notes the reader wants shown.
pub fn read_config_json(text: &str, name: &str) -> Result<ReadConfig, ModelError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
        what: "config.json".into(),
        reason: e.to_string(),
    })?;
    let map = value
        .as_object()
        .ok_or_else(|| field_err("config.json", "must be a JSON object"))?;
    let mut notes = Vec::new();
    let model_type = model_type(map, "model_type")?;
    if families::reader(model_type).is_none()
        && let Some(Value::Object(text_config)) = map.get("text_config")
    {
        // A multimodal config (gemma3, mistral3, llava, ...): its language model.
        let inner = model_type_or(text_config, model_type)?;
        notes.push(format!(
            "{name}: `{model_type}` is multimodal; read its language model (`text_config`, \
             model_type `{inner}`): the vision tower and projector are not counted (safetensors \
             headers count everything)"
        ));
        let mut spec = read_family(text_config, inner, name)?;
        // The tie flag of a multimodal model sits on the outer config.
        if !text_config.contains_key("tie_word_embeddings")
            && let Some(Value::Bool(tied)) = map.get("tie_word_embeddings")
        {
            spec.tied_embeddings = *tied;
        }
        return Ok(ReadConfig { spec, notes });
    }
    if families::reader(model_type).is_none()
        && let Some(inner) = flat_text_model(model_type)
    {
        // Qwen2-VL and Qwen2.5-VL checkpoints keep their language model's fields at the top.
        notes.push(format!(
            "{name}: `{model_type}` is multimodal; read its language model (model_type \
             `{inner}`): the vision tower and projector are not counted (safetensors headers \
             count everything)"
        ));
        let spec = read_family(map, inner, name)?;
        return Ok(ReadConfig { spec, notes });
    }
    let spec = read_family(map, model_type, name)?;
    if spec.block.attention_sinks {
        notes.push(format!(
            "{name}: transformers has no sdpa attention for `{model_type}` (attention sinks):              sdpa is counted as eager, its default fallback (--attention flash for a flash kernel)"
        ));
    }
    Ok(ReadConfig { spec, notes })
}

/// The text model type of a multimodal type, for a `text_config` without its own model type
/// and for the configs that write the language model's fields at the top level.
fn text_model_of(outer: &str) -> Option<&'static str> {
    Some(match outer {
        "gemma3" => "gemma3_text",
        "mistral3" | "llava" | "llava_next" => "llama",
        "qwen2_vl" => "qwen2_vl_text",
        "qwen2_5_vl" => "qwen2_5_vl_text",
        "qwen3_vl" => "qwen3_vl_text",
        "qwen3_vl_moe" => "qwen3_vl_moe_text",
        _ => return None,
    })
}

/// Multimodal types whose language model's fields may sit at the top level of the config.
fn flat_text_model(outer: &str) -> Option<&'static str> {
    match outer {
        "qwen2_vl" | "qwen2_5_vl" => text_model_of(outer),
        _ => None,
    }
}

fn model_type<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a str, ModelError> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.as_str()),
        None => Err(field_err(key, "is missing")),
        Some(v) => Err(field_err(key, format!("must be a string (got {v})"))),
    }
}

/// A nested `text_config`'s model type: its own, or the text model of the outer type.
fn model_type_or<'a>(map: &'a Map<String, Value>, outer: &'a str) -> Result<&'a str, ModelError> {
    if map.contains_key("model_type") {
        return model_type(map, "model_type");
    }
    Ok(text_model_of(outer).unwrap_or(outer))
}

fn read_family(
    map: &Map<String, Value>,
    model_type: &str,
    name: &str,
) -> Result<TransformerSpec, ModelError> {
    let f = Fields { map };
    let Some((reader, static_type)) = families::reader(model_type) else {
        return Err(ModelError::UnknownModelType {
            model_type: model_type.to_string(),
            supported: supported_model_types().join(", "),
        });
    };
    let mut spec = (reader.read)(&f, name, static_type)?;
    if let Some((default_window, rule)) = families::sliding_rule(static_type) {
        spec.block.sliding_window = sliding_window(&f, spec.layers, default_window, rule)?;
    }
    // What the MLP's activation keeps for backward follows the configured function.
    let act = match f.string("hidden_act")? {
        Some(a) => Some(a),
        None => f.string("activation_function")?,
    };
    if let Some(act) = act
        && spec.block.mlp_activation != MlpActivation::ClampedSwiGlu
    {
        spec.block.mlp_activation = if act == "gelu_new" {
            MlpActivation::GeluNewPython
        } else {
            MlpActivation::Fused
        };
    }
    Ok(spec)
}

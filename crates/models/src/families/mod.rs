//! Model families as data: one small description per family (or group of close relatives) that
//! reads a `config.json` into a generic [`TransformerSpec`]: which modules a block has, what they
//! are called, which norms, attention and MLP kinds. Adding a family is adding a file here and
//! one line in [`FAMILIES`]; the core only knows generic building blocks.
//!
//! Defaults for absent fields are transformers 5.24's `*Config()` defaults of each model type.

mod arcee;
mod cohere;
mod deepseek;
mod falcon;
mod gemma;
mod glm;
mod gpt2;
mod gpt_neox;
mod gpt_oss;
mod granite;
mod hunyuan;
mod llama;
mod olmo;
mod phi;
mod qwen;
mod seed_oss;
mod stablelm;
mod starcoder2;

use crate::ModelError;
use crate::config::{Fields, SlidingLayers};
use ftbudget_core::TransformerSpec;

/// Reads one or more `model_type`s.
pub struct FamilyReader {
    pub model_types: &'static [&'static str],
    pub read: fn(&Fields<'_>, &str, &'static str) -> Result<TransformerSpec, ModelError>,
}

/// Every family, in the order error messages list their model types.
pub const FAMILIES: &[&FamilyReader] = &[
    &llama::LLAMA,
    &llama::MISTRAL,
    &llama::QWEN2,
    &llama::SMOLLM3,
    &llama::ERNIE4_5,
    &llama::EXAONE4,
    &granite::GRANITE,
    &granite::GRANITEMOE,
    &gemma::GEMMA,
    &gemma::GEMMA2,
    &gemma::GEMMA3_TEXT,
    &gpt2::GPT2,
    &phi::PHI3,
    &phi::PHI,
    &llama::MIXTRAL,
    &qwen::QWEN3,
    &qwen::QWEN3_MOE,
    &qwen::QWEN2_MOE,
    &gpt_oss::GPT_OSS,
    &deepseek::DEEPSEEK,
    &olmo::OLMO2,
    &glm::GLM4,
    &glm::GLM,
    &cohere::COHERE,
    &falcon::FALCON,
    &gpt_neox::GPT_NEOX,
    &starcoder2::STARCODER2,
    &stablelm::STABLELM,
    &glm::GLM4_MOE,
    &olmo::OLMOE,
    &seed_oss::SEED_OSS,
    &arcee::ARCEE,
    &hunyuan::HUNYUAN_V1_DENSE,
    &llama::QWEN2_VL_TEXT,
    &qwen::QWEN3_VL_TEXT,
    &qwen::QWEN3_VL_MOE_TEXT,
    &gpt2::GPT_BIGCODE,
    &olmo::OLMO,
];

/// Sliding-window attention, by model type: the config class's window when config.json has no
/// `sliding_window` field, and which layers slide when it lists no `layer_types` (transformers
/// 5.24's config classes; the memory model counts what each sliding layer saves).
pub const SLIDING_WINDOWS: &[(&str, Option<u64>, SlidingLayers)] = &[
    ("mistral", Some(4096), SlidingLayers::All),
    ("ministral", Some(4096), SlidingLayers::All),
    ("ministral3", None, SlidingLayers::All),
    ("mixtral", None, SlidingLayers::All),
    ("phi3", None, SlidingLayers::All),
    ("starcoder2", None, SlidingLayers::All),
    ("gemma2", Some(4096), SlidingLayers::Even),
    ("gpt_oss", Some(128), SlidingLayers::Even),
    (
        "gemma3_text",
        Some(4096),
        SlidingLayers::AllButEvery {
            n: 6,
            pattern_key: Some("sliding_window_pattern"),
        },
    ),
    (
        "cohere2",
        Some(4096),
        SlidingLayers::AllButEvery {
            n: 4,
            pattern_key: Some("sliding_window_pattern"),
        },
    ),
    (
        "exaone4",
        Some(4096),
        SlidingLayers::AllButEvery {
            n: 4,
            pattern_key: Some("sliding_window_pattern"),
        },
    ),
    (
        "olmo3",
        Some(4096),
        SlidingLayers::AllButEvery {
            n: 4,
            pattern_key: None,
        },
    ),
    (
        "qwen2",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 28,
        },
    ),
    (
        "qwen3",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 28,
        },
    ),
    (
        "qwen2_moe",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 28,
        },
    ),
    // Qwen3MoeConfig has no `max_window_layers`: every layer, when enabled.
    (
        "qwen3_moe",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 0,
        },
    ),
    (
        "smollm3",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 28,
        },
    ),
    (
        "qwen2_vl_text",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 80,
        },
    ),
    (
        "qwen2_5_vl_text",
        Some(4096),
        SlidingLayers::FromMaxWindowLayers {
            default_max_window_layers: 80,
        },
    ),
];

/// The sliding-window rule of `model_type`, if it has one.
pub fn sliding_rule(model_type: &str) -> Option<(Option<u64>, SlidingLayers)> {
    SLIDING_WINDOWS
        .iter()
        .find(|(t, ..)| *t == model_type)
        .map(|&(_, window, rule)| (window, rule))
}

/// The reader of `model_type`.
pub fn reader(model_type: &str) -> Option<(&'static FamilyReader, &'static str)> {
    FAMILIES.iter().find_map(|f| {
        f.model_types
            .iter()
            .find(|t| **t == model_type)
            .map(|t| (*f, *t))
    })
}

/// Every supported `model_type`.
pub fn supported_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

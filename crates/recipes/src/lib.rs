//! Training recipes as people already write them, read into what ftbudget estimates: the base
//! model (a Hub id, a path or a preset), one regime spec, the memory settings of one training
//! step, and every key that changes memory or compute but is not modelled (reported, never
//! silently dropped). Five formats, detected from their keys: axolotl YAML, LLaMA-Factory YAML,
//! torchtune YAML, TRL / transformers `TrainingArguments` JSON (or YAML) and peft's
//! `adapter_config.json`. Where a recipe is silent, each tool's own default applies; the source of
//! every default is cited next to it. YAML is read with `serde_yaml_ng`, the maintained fork of
//! the archived `serde_yaml`.

mod axolotl;
mod common;
mod doc;
mod llama_factory;
mod peft;
mod torchtune;
mod trl;

use ftbudget_core::MemorySettings;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use thiserror::Error;

pub use common::AdapterChoice;

/// The recipe formats ftbudget reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeFormat {
    Axolotl,
    LlamaFactory,
    Torchtune,
    Trl,
    Peft,
}

impl RecipeFormat {
    pub const ALL: [RecipeFormat; 5] = [
        RecipeFormat::Axolotl,
        RecipeFormat::LlamaFactory,
        RecipeFormat::Torchtune,
        RecipeFormat::Trl,
        RecipeFormat::Peft,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            RecipeFormat::Axolotl => "axolotl",
            RecipeFormat::LlamaFactory => "llama-factory",
            RecipeFormat::Torchtune => "torchtune",
            RecipeFormat::Trl => "trl",
            RecipeFormat::Peft => "peft",
        }
    }
}

impl fmt::Display for RecipeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RecipeFormat {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecipeFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| RecipeError::UnknownFormat {
                value: s.to_string(),
            })
    }
}

/// A key that changes memory or compute but that ftbudget does not model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmodelled {
    pub key: String,
    pub value: String,
    pub why: String,
}

/// What a recipe asks for, in ftbudget's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub format: RecipeFormat,
    /// The base model as the recipe names it (a Hub id, a local path or an ftbudget preset);
    /// `None` when the recipe names none ftbudget can use (the CLI then needs `--model`).
    pub model: Option<String>,
    /// The regime spec (`lora:r=32,targets=all-linear`, `full-ft`, ...).
    pub regime: String,
    /// The memory settings of one training step.
    pub settings: MemorySettings,
    /// Gradient accumulation steps (no effect on the memory of one step).
    pub grad_accum: u64,
    /// Every key read, with its value as written.
    pub read: Vec<(String, String)>,
    /// The tool defaults applied where the recipe is silent, and other remarks.
    pub notes: Vec<String>,
    pub unmodelled: Vec<Unmodelled>,
}

/// A recipe that cannot be read; every message is one line naming the file or the key.
#[derive(Debug, Error)]
pub enum RecipeError {
    #[error("--recipe {path}: cannot read the file: {message}")]
    Io { path: String, message: String },
    #[error("--recipe {path}: not valid {syntax}: {message}")]
    Syntax {
        path: String,
        syntax: &'static str,
        message: String,
    },
    #[error("--recipe {path}: the top level is not a mapping of keys")]
    NotAMapping { path: String },
    #[error(
        "--recipe {path}: cannot tell the format from its keys (axolotl has base_model, LLaMA-Factory finetuning_type or cutoff_len, torchtune model._component_, peft peft_type, TRL per_device_train_batch_size): pass --recipe-format"
    )]
    Undetected { path: String },
    #[error(
        "--recipe-format: unknown format `{value}` (expected axolotl, llama-factory, torchtune, trl or peft)"
    )]
    UnknownFormat { value: String },
    #[error("recipe key `{key}`: `{value}` is not accepted (expected {expected})")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("recipe key `{key}`: {reason}")]
    Contradiction { key: String, reason: String },
    #[error("recipe key `{key}` is missing ({why})")]
    Missing { key: String, why: String },
}

/// Parse `text` as JSON when it is a JSON object, else as YAML, into a JSON value.
fn parse_text(path: &str, text: &str) -> Result<serde_json::Value, RecipeError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| RecipeError::Syntax {
            path: path.to_string(),
            syntax: "JSON",
            message: e.to_string(),
        })
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| RecipeError::Syntax {
            path: path.to_string(),
            syntax: "YAML",
            message: e.to_string().replace('\n', " "),
        })
    }
}

/// The format a recipe's keys say it is.
pub fn detect(map: &serde_json::Map<String, serde_json::Value>) -> Option<RecipeFormat> {
    let has = |k: &str| map.contains_key(k);
    if has("peft_type") {
        return Some(RecipeFormat::Peft);
    }
    if map
        .get("model")
        .and_then(|m| m.as_object())
        .is_some_and(|m| m.contains_key("_component_"))
    {
        return Some(RecipeFormat::Torchtune);
    }
    if has("base_model") || has("micro_batch_size") || has("sequence_len") || has("adapter") {
        return Some(RecipeFormat::Axolotl);
    }
    if has("finetuning_type") || has("cutoff_len") || has("lora_target") || has("stage") {
        return Some(RecipeFormat::LlamaFactory);
    }
    if has("per_device_train_batch_size")
        || has("model_name_or_path")
        || has("output_dir")
        || has("use_peft")
    {
        return Some(RecipeFormat::Trl);
    }
    None
}

/// Read the recipe file at `path`; `forced` overrides the detected format. Files a recipe names
/// (a DeepSpeed JSON) are looked up relative to the recipe's folder.
pub fn read_recipe(path: &Path, forced: Option<RecipeFormat>) -> Result<Recipe, RecipeError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Io {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    parse_recipe(&shown, &text, path.parent(), forced)
}

/// Read recipe text; `name` is how errors name the file, `folder` where referenced files live.
pub fn parse_recipe(
    name: &str,
    text: &str,
    folder: Option<&Path>,
    forced: Option<RecipeFormat>,
) -> Result<Recipe, RecipeError> {
    let value = parse_text(name, text)?;
    let map = value.as_object().ok_or_else(|| RecipeError::NotAMapping {
        path: name.to_string(),
    })?;
    let format = match forced {
        Some(f) => f,
        None => detect(map).ok_or_else(|| RecipeError::Undetected {
            path: name.to_string(),
        })?,
    };
    let mut doc = doc::Doc::new(map, folder);
    let recipe = match format {
        RecipeFormat::Axolotl => axolotl::read(&mut doc)?,
        RecipeFormat::LlamaFactory => llama_factory::read(&mut doc)?,
        RecipeFormat::Torchtune => torchtune::read(&mut doc)?,
        RecipeFormat::Trl => trl::read(&mut doc)?,
        RecipeFormat::Peft => peft::read(&mut doc)?,
    };
    recipe
        .settings
        .validate()
        .map_err(|e| RecipeError::Invalid {
            key: e.setting.to_string(),
            value: e.to_string(),
            expected: "a value ftbudget accepts".into(),
        })?;
    Ok(recipe)
}

#[cfg(test)]
mod tests;

//! Where model shapes come from: built-in presets, Hugging Face `config.json` files, and
//! safetensors headers. This crate does the file I/O the core refuses to do; it only ever reads
//! headers and configs, never tensor data.
//!
//! `config.json` supports the model types in [`config::SUPPORTED_MODEL_TYPES`], with transformers
//! 5 defaults for absent fields. A safetensors inventory gives exact parameter counts and Linear
//! modules for any decoder, but not the attention head count (weights do not record it): its
//! shape reports one head of `hidden` width, which only activation estimates use. Put the
//! `config.json` in the folder to get both.

pub mod config;
pub mod families;
pub mod inventory;
pub mod presets;

use ftbudget_core::{ModelShape, ShapeError};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown model `{name}`: not a preset ({presets}) and not an existing path")]
    Unknown { name: String, presets: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{what}: malformed JSON: {reason}")]
    Json { what: String, reason: String },
    #[error("config field `{field}` {reason}")]
    Field { field: String, reason: String },
    #[error("unsupported model_type `{model_type}` (supported: {supported})")]
    UnknownModelType {
        model_type: String,
        supported: String,
    },
    #[error("safetensors {path}: {reason}")]
    Safetensors { path: String, reason: String },
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// The shape described by a `config.json` text.
pub fn from_config_json(text: &str, name: &str) -> Result<ModelShape, ModelError> {
    Ok(config::spec_from_config_json(text, name)?.build()?)
}

/// A model read for estimating: its shape and what the user should be told about how it was
/// read (a vision tower left out, heads assumed from headers, ...), one line each.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub shape: ModelShape,
    pub notes: Vec<String>,
}

fn file_stem(path: &Path) -> String {
    let base = if path.file_name().is_some_and(|f| {
        f == "config.json" || f == "model.safetensors" || f == "model.safetensors.index.json"
    }) {
        path.parent().and_then(Path::file_name)
    } else {
        path.file_stem()
    };
    base.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A preset name, or a path to a `config.json`, a `.safetensors` file, a
/// `model.safetensors.index.json`, or a folder holding one of them (config.json first).
pub fn load(model: &str) -> Result<ModelShape, ModelError> {
    load_model(model).map(|m| m.shape)
}

/// [`load`], with the notes to show the user.
pub fn load_model(model: &str) -> Result<LoadedModel, ModelError> {
    if let Some(spec) = presets::spec(model) {
        return Ok(LoadedModel {
            shape: spec.build()?,
            notes: Vec::new(),
        });
    }
    let path = Path::new(model);
    if !path.exists() {
        return Err(ModelError::Unknown {
            name: model.to_string(),
            presets: presets::names().join(", "),
        });
    }
    let name = file_stem(path);
    let config = if path.is_dir() {
        Some(path.join("config.json")).filter(|p| p.is_file())
    } else if path.extension().is_some_and(|e| e == "json")
        && !path.to_string_lossy().ends_with(".index.json")
    {
        Some(path.to_path_buf())
    } else {
        None
    };
    let headers = if path.is_dir() || config.is_none() {
        inventory::locate(path)
    } else {
        None
    };
    if let Some(config) = &config {
        let text = std::fs::read_to_string(config).map_err(|e| ModelError::Io {
            path: config.display().to_string(),
            reason: e.to_string(),
        })?;
        match config::read_config_json(&text, &name) {
            Ok(read) => {
                return Ok(LoadedModel {
                    shape: read.spec.build()?,
                    notes: read.notes,
                });
            }
            // An architecture no family describes: its headers still count it exactly.
            Err(ModelError::UnknownModelType { model_type, .. }) if headers.is_some() => {
                let mut loaded = from_headers(headers.as_deref().unwrap_or(path), &name)?;
                loaded.notes.insert(
                    0,
                    format!(
                        "{name}: model_type `{model_type}` has no family description: parameters \
                         counted from the safetensors headers, activations from a generic \
                         decoder block (an approximation)"
                    ),
                );
                return Ok(loaded);
            }
            Err(e) => return Err(e),
        }
    }
    let Some(file) = headers else {
        return Err(ModelError::Io {
            path: model.to_string(),
            reason: "no config.json, model.safetensors or model.safetensors.index.json".into(),
        });
    };
    from_headers(&file, &name)
}

fn from_headers(file: &Path, name: &str) -> Result<LoadedModel, ModelError> {
    let tensors = if file.to_string_lossy().ends_with(".index.json") {
        inventory::read_index(file)?
    } else {
        inventory::read_file(file)?
    };
    inventory::model_from_inventory(name, &tensors)
}

//! Where model shapes come from: built-in presets, Hugging Face `config.json` files, and
//! safetensors headers. This crate does the file I/O the core refuses to do; it only ever reads
//! headers and configs, never tensor data.

pub mod presets;

use ftbudget_core::{ModelShape, ShapeError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown model `{name}`: not a preset ({presets}) and not an existing path")]
    Unknown { name: String, presets: String },
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// A preset name or a path to a model description.
pub fn load(model: &str) -> Result<ModelShape, ModelError> {
    if let Some(spec) = presets::spec(model) {
        return Ok(spec.build()?);
    }
    Err(ModelError::Unknown {
        name: model.to_string(),
        presets: presets::names().join(", "),
    })
}

//! Measured one-step training memory (`fixtures/memory/*.json`, made by
//! `tools/measure-memory/`) as typed records, and the mapping from a record to ftbudget's inputs
//! (model shape, regime, memory settings) so that tests and experiment reports can put the
//! prediction beside the measurement.

use ftbudget_core::{
    ActivationModel, ActivationSettings, AttentionImpl, Checkpointing, MemoryEstimate,
    MemorySettings, ModelShape, Optimizer, Precision, Sharding, StepSettings, TrainingPlan,
    Workload,
};
use serde::Deserialize;
use std::collections::BTreeMap;

pub mod peak;

#[derive(Debug, thiserror::Error)]
pub enum MeasurementError {
    // The cause is part of the one-line message, not also a `source()` (which `{:#}` would
    // print a second time).
    #[error("cannot parse measurement records: {reason}")]
    Parse { reason: String },
    #[error("record {id}: unsupported {field} `{value}`")]
    Unsupported {
        id: String,
        field: &'static str,
        value: String,
    },
    #[error("record {id}: {message}")]
    Model { id: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordShape {
    pub family: String,
    pub hidden_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub intermediate_size: u64,
    pub vocab_size: u64,
    pub max_position_embeddings: u64,
    pub tie_word_embeddings: bool,
    /// The keyword arguments the config class was built with (the rest are its defaults).
    #[serde(default)]
    pub config_kwargs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordParams {
    pub trainable_count: u64,
    pub frozen_count: u64,
    pub trainable_bytes: u64,
    pub frozen_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordGrads {
    pub bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordOptimizer {
    pub state_bytes_excl_step: u64,
    pub step_bytes: u64,
    pub num_params_with_state: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordActivations {
    /// Every storage packed for backward by the step's saved-tensor hook during the forward,
    /// counted once, parameters excluded. With gradient checkpointing the hook sees only what
    /// lies outside the checkpointed blocks and the blocks' saved inputs.
    pub activation_bytes_dedup: u64,
    pub weight_cast_bytes_dedup: u64,
    pub activation_bytes_dedup_excl_weight_casts: u64,
    /// Lifetime-tracked figures (records made with checkpointing, dropout or `--lifetimes`).
    #[serde(default)]
    pub peak: Option<RecordPeak>,
}

/// The peak over the whole step (forward and backward, recomputation included) of the bytes
/// kept for backward, each storage counted while it is alive (`tools/measure-memory/README.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct RecordPeak {
    /// Parameters and autocast's weight casts excluded.
    pub saved_bytes_excl_weight_casts: u64,
    /// The weight casts alive at that moment.
    pub weight_cast_bytes_at_peak: u64,
    /// The peak of the weight casts alone.
    pub weight_cast_bytes_peak: u64,
    /// The peak of saved bytes and weight casts together.
    pub saved_bytes_incl_weight_casts_peak: u64,
    /// `forward` or `backward`.
    pub phase: String,
    /// Saved bytes alive when the forward returns.
    pub forward_end_saved_bytes_excl_weight_casts: u64,
}

/// One measured training step (see `fixtures/memory/README.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct MemoryRecord {
    pub id: String,
    pub model: String,
    pub shape: RecordShape,
    /// `full`, `lora-r{r}` or `dora-r{r}` (peft, all-linear, bias none, `lora_dropout` =
    /// [`MemoryRecord::dropout`]).
    pub regime: String,
    /// `fp32` or `autocast-bf16`.
    pub dtype_mode: String,
    pub attn_implementation_used: String,
    pub batch: u64,
    pub seq: u64,
    pub params: RecordParams,
    pub grads: RecordGrads,
    pub optimizer: RecordOptimizer,
    pub activations: RecordActivations,
    /// `model.gradient_checkpointing_enable()` (non-reentrant); missing in older records: off.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Every dropout probability of the config and peft's `lora_dropout`; missing: 0.
    #[serde(default)]
    pub dropout: f64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

pub fn parse_records(json: &str) -> Result<Vec<MemoryRecord>, MeasurementError> {
    serde_json::from_str(json).map_err(|e| MeasurementError::Parse {
        reason: e.to_string(),
    })
}

fn unsupported(r: &MemoryRecord, field: &'static str, value: &str) -> MeasurementError {
    unsupported_value(&r.id, field, value)
}

/// Record `id` has a `field` value ftbudget cannot map (shared by every record kind).
pub(crate) fn unsupported_value(id: &str, field: &'static str, value: &str) -> MeasurementError {
    MeasurementError::Unsupported {
        id: id.to_owned(),
        field,
        value: value.to_owned(),
    }
}

/// The model shape the record was measured on, read as a `config.json` (the family's
/// `model_type` and the config kwargs the record was built with) by the models crate, so every
/// family it reads can be measured.
pub fn shape(r: &MemoryRecord) -> Result<ModelShape, MeasurementError> {
    shape_of(&r.shape, &r.model, &r.id)
}

/// [`shape`] from a record's shape fields, model name and id.
pub(crate) fn shape_of(
    sh: &RecordShape,
    model: &str,
    id: &str,
) -> Result<ModelShape, MeasurementError> {
    let mut config = sh.config_kwargs.clone();
    config.insert("model_type".into(), sh.family.clone().into());
    let resolved = [
        ("hidden_size", sh.hidden_size),
        ("num_hidden_layers", sh.num_hidden_layers),
        ("num_attention_heads", sh.num_attention_heads),
        ("num_key_value_heads", sh.num_key_value_heads),
        ("intermediate_size", sh.intermediate_size),
        ("vocab_size", sh.vocab_size),
        ("max_position_embeddings", sh.max_position_embeddings),
    ];
    for (key, value) in resolved {
        config.entry(key).or_insert(value.into());
    }
    config
        .entry("tie_word_embeddings")
        .or_insert(sh.tie_word_embeddings.into());
    let text = serde_json::Value::Object(config).to_string();
    ftbudget_models::from_config_json(&text, model).map_err(|e| MeasurementError::Model {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// The ftbudget regime spec of the record's regime.
pub fn regime_spec(r: &MemoryRecord) -> Result<String, MeasurementError> {
    regime_spec_of(&r.id, &r.regime)
}

/// The ftbudget spec of a measured regime (`full`, `lora-r{r}`, `dora-r{r}`: peft all-linear) of
/// record `id`.
pub(crate) fn regime_spec_of(id: &str, regime: &str) -> Result<String, MeasurementError> {
    if regime == "full" {
        return Ok("full-ft".into());
    }
    for (prefix, name) in [("lora-r", "lora"), ("dora-r", "dora")] {
        if let Some(rank) = regime.strip_prefix(prefix) {
            return Ok(format!("{name}:r={rank},targets=all-linear"));
        }
    }
    Err(unsupported_value(id, "regime", regime))
}

/// The memory settings the record was measured under: torch AdamW with step counters, the
/// per-operation activation model, the record's checkpointing and dropout, one GPU.
pub fn settings(r: &MemoryRecord) -> Result<MemorySettings, MeasurementError> {
    let precision = match r.dtype_mode.as_str() {
        "fp32" => Precision::Fp32,
        "autocast-bf16" => Precision::AmpBf16,
        other => return Err(unsupported(r, "dtype_mode", other)),
    };
    let attention: AttentionImpl = r
        .attn_implementation_used
        .parse()
        .map_err(|_| unsupported(r, "attn_implementation_used", &r.attn_implementation_used))?;
    Ok(MemorySettings {
        precision,
        base_dtype: None,
        optimizer: Optimizer::AdamW,
        step_counters: true,
        activations: ActivationSettings {
            model: ActivationModel::Model,
            attention,
            checkpointing: if r.gradient_checkpointing {
                Checkpointing::Full
            } else {
                Checkpointing::None
            },
            dropout: (r.dropout > 0.0).then_some(r.dropout),
        },
        workload: Workload {
            batch: r.batch,
            seq: r.seq,
        },
        sharding: Sharding::default(),
        step: StepSettings::default(),
    })
}

/// The inputs ftbudget needs for a record.
pub fn inputs(
    r: &MemoryRecord,
) -> Result<(ModelShape, TrainingPlan, MemorySettings), MeasurementError> {
    let model = shape(r)?;
    let registry = ftbudget_roster::registry().map_err(|e| MeasurementError::Model {
        id: r.id.clone(),
        message: e.to_string(),
    })?;
    let regime = registry
        .build(&regime_spec(r)?)
        .map_err(|e| MeasurementError::Model {
            id: r.id.clone(),
            message: e.to_string(),
        })?;
    let plan = regime.plan(&model).map_err(|e| MeasurementError::Model {
        id: r.id.clone(),
        message: e.to_string(),
    })?;
    Ok((model, plan, settings(r)?))
}

/// ftbudget's estimate for the record's configuration.
pub fn predict(r: &MemoryRecord) -> Result<MemoryEstimate, MeasurementError> {
    let (model, plan, settings) = inputs(r)?;
    ftbudget_core::estimate_memory(&model, &plan, &settings).map_err(|e| MeasurementError::Model {
        id: r.id.clone(),
        message: e.to_string(),
    })
}

/// The measured activation bytes ftbudget's activation bucket stands for, weight casts
/// excluded: with gradient checkpointing the peak over the step of the live saved bytes (the
/// checkpoints plus one block's recomputation, or the forward's end if larger); without it every
/// storage the forward packs (the convention of the original records, which also counts DoRA's
/// weight-norm graph that peft drops during the forward). A checkpointed record without the
/// lifetime-tracked figures falls back to the packed bytes.
pub fn measured_activations(r: &MemoryRecord) -> u64 {
    match &r.activations.peak {
        Some(peak) if r.gradient_checkpointing => peak.saved_bytes_excl_weight_casts,
        _ => r.activations.activation_bytes_dedup_excl_weight_casts,
    }
}

/// The measured autocast weight casts ftbudget's weight-cast bucket stands for: with gradient
/// checkpointing those alive at the activation peak (see [`measured_activations`]), without it
/// every cast the forward packs.
pub fn measured_weight_casts(r: &MemoryRecord) -> u64 {
    match &r.activations.peak {
        Some(peak) if r.gradient_checkpointing => peak.weight_cast_bytes_at_peak,
        _ => r.activations.weight_cast_bytes_dedup,
    }
}

/// Relative activation error of the prediction, `(predicted - measured) / measured`
/// (activations excluding weight casts, see [`measured_activations`]).
pub fn activation_error(r: &MemoryRecord, e: &MemoryEstimate) -> f64 {
    let measured = measured_activations(r) as f64;
    (e.activations as f64 - measured) / measured
}

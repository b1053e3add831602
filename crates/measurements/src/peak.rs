//! Measured peaks of live memory over two Trainer-like steps (`fixtures/memory/measured_peak.json`,
//! made by `tools/measure-peak` with PyTorch's `MemTracker`), and ftbudget's predicted peak for
//! each record.

use crate::{MeasurementError, RecordShape, shape_of};
use ftbudget_core::memory::LiveBytes;
use ftbudget_core::{
    ActivationModel, ActivationSettings, AttentionImpl, Checkpointing, DType, LossKind,
    MemoryEstimate, MemorySettings, ModelShape, Optimizer, Precision, Sharding, StepPeak,
    StepSettings, TrainingPlan, Workload,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// MemTracker's bytes at one moment, by category (`parameters`, `buffers`, `gradients`,
/// `activations`, `temporaries`, `optimizer`, `other`: the input ids).
pub type Categories = BTreeMap<String, u64>;

/// The peak of one phase of a step.
#[derive(Debug, Clone, Deserialize)]
pub struct PhasePeak {
    pub bytes: u64,
    pub by_category: Categories,
}

/// One step's peak: the largest phase peak, its phase and breakdown, and every phase's.
#[derive(Debug, Clone, Deserialize)]
pub struct StepRecord {
    pub peak_bytes: u64,
    /// `forward`, `loss`, `backward`, `optimizer` or `zero_grad`.
    pub phase: String,
    pub by_category: Categories,
    pub phases: BTreeMap<String, PhasePeak>,
    /// Live bytes after `zero_grad`.
    pub end_bytes: u64,
    /// With activation offloading: the most bytes the host copies held at once.
    #[serde(default)]
    pub host_offload_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeakSteps {
    pub step1: StepRecord,
    pub step2: StepRecord,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeakParams {
    pub trainable_bytes: u64,
    /// Every parameter's storage, and for a 4-bit base the quant states beside its weights.
    pub total_bytes: u64,
    /// bitsandbytes' quant states of the 4-bit weights (absmax, codebooks, nested absmax and
    /// offset), which are neither parameters nor buffers; absent without quantization.
    #[serde(default)]
    pub quant_state_bytes: Option<u64>,
}

/// How a QLoRA record's base was quantized (`measured_peak_qlora.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct PeakQuantization {
    pub bnb_4bit_quant_type: String,
    pub bnb_4bit_use_double_quant: bool,
    /// `float32` or `bfloat16`.
    pub bnb_4bit_compute_dtype: String,
    /// The dtype `from_pretrained` loaded the model in (what the quant state dequantizes to).
    pub load_dtype: String,
    pub blocksize: u64,
    /// Whether peft's `prepare_model_for_kbit_training` ran (parameters outside the 4-bit weights
    /// upcast to fp32): the `qlora` regime's `prepare`.
    pub prepare_model_for_kbit_training: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeakOptimizer {
    pub state_bytes_excl_step: u64,
    pub step_bytes: u64,
}

/// One measured pair of steps (see `fixtures/memory/README.md`, "Peak of the step").
#[derive(Debug, Clone, Deserialize)]
pub struct PeakRecord {
    pub id: String,
    pub model: String,
    pub shape: RecordShape,
    /// `full`, `lora-r{r}`, `dora-r{r}` or `qlora-r{r}` / `qlora-r{r}-dq` (double
    /// quantization) (peft all-linear).
    pub regime: String,
    /// `fp32`, `autocast-bf16` (fp32 weights; QLoRA: loaded in bf16 and prepared) or `bf16-base`
    /// (weights loaded in bf16, peft's adapters fp32, bf16 autocast; QLoRA: not prepared).
    pub dtype_mode: String,
    pub attn_implementation_used: String,
    pub batch: u64,
    pub seq: u64,
    pub gradient_checkpointing: bool,
    /// The technique the step ran with (`measured_peak_techniques.json`): `loss-chunked`,
    /// `loss-fused`, `optimizer-in-backward`, `activation-offload` or `adamw-fused`; none in
    /// the plain records.
    #[serde(default)]
    pub technique: Option<String>,
    /// The bitsandbytes configuration of a QLoRA record; none otherwise.
    #[serde(default)]
    pub quantization: Option<PeakQuantization>,
    pub params: PeakParams,
    pub optimizer: PeakOptimizer,
    pub peak: PeakSteps,
}

impl PeakRecord {
    /// The larger of the two steps' peaks.
    pub fn measured_peak(&self) -> u64 {
        self.peak.step1.peak_bytes.max(self.peak.step2.peak_bytes)
    }
}

pub fn parse_peak_records(json: &str) -> Result<Vec<PeakRecord>, MeasurementError> {
    serde_json::from_str(json).map_err(|e| MeasurementError::Parse {
        reason: e.to_string(),
    })
}

fn unsupported(r: &PeakRecord, field: &'static str, value: &str) -> MeasurementError {
    crate::unsupported_value(&r.id, field, value)
}

/// The ftbudget regime spec of the record's regime: QLoRA with the record's block size, double
/// quantization, compute dtype and preparation.
pub fn peak_regime_spec(r: &PeakRecord) -> Result<String, MeasurementError> {
    let Some(q) = &r.quantization else {
        return crate::regime_spec_of(&r.id, &r.regime);
    };
    if q.bnb_4bit_quant_type != "nf4" {
        return Err(unsupported(
            r,
            "bnb_4bit_quant_type",
            &q.bnb_4bit_quant_type,
        ));
    }
    let rank = r
        .regime
        .strip_prefix("qlora-r")
        .map(|rest| rest.strip_suffix("-dq").unwrap_or(rest))
        .filter(|rank| rank.parse::<u64>().is_ok())
        .ok_or_else(|| unsupported(r, "regime", &r.regime))?;
    let compute_dtype: DType = q
        .bnb_4bit_compute_dtype
        .parse()
        .map_err(|_| unsupported(r, "bnb_4bit_compute_dtype", &q.bnb_4bit_compute_dtype))?;
    Ok(format!(
        "qlora:r={rank},targets=all-linear,blocksize={},double_quant={},compute_dtype={compute_dtype},prepare={}",
        q.blocksize, q.bnb_4bit_use_double_quant, q.prepare_model_for_kbit_training
    ))
}

/// The settings the record ran under: torch AdamW (foreach) with step counters, the
/// per-operation activation model, no dropout, one GPU. `bf16-base` is pure bf16 for full
/// fine-tuning (every weight trained in bf16) and bf16 autocast over a bf16 frozen base with fp32
/// adapters otherwise. A QLoRA record's base dtype is the dtype it was loaded in (`--base-dtype`
/// as a user gives it), whether or not the preparation then upcast it: the regime's `prepare`
/// decides that.
pub fn peak_settings(r: &PeakRecord) -> Result<MemorySettings, MeasurementError> {
    let (precision, mut base_dtype) = match (r.dtype_mode.as_str(), r.regime.as_str()) {
        ("fp32", _) => (Precision::Fp32, None),
        ("autocast-bf16", _) => (Precision::AmpBf16, None),
        ("bf16-base", "full") => (Precision::Bf16, None),
        ("bf16-base", _) => (Precision::AmpBf16, Some(DType::BF16)),
        (other, _) => return Err(unsupported(r, "dtype_mode", other)),
    };
    let prepared = r
        .quantization
        .as_ref()
        .is_some_and(|q| q.prepare_model_for_kbit_training);
    if let Some(q) = &r.quantization {
        let loaded: DType = q
            .load_dtype
            .parse()
            .map_err(|_| unsupported(r, "load_dtype", &q.load_dtype))?;
        base_dtype = Some(loaded);
    }
    let attention: AttentionImpl = r
        .attn_implementation_used
        .parse()
        .map_err(|_| unsupported(r, "attn_implementation_used", &r.attn_implementation_used))?;
    let mut step = StepSettings::default();
    let mut optimizer = Optimizer::AdamW;
    match r.technique.as_deref() {
        None => {}
        Some("loss-chunked") => step.loss = LossKind::Chunked,
        Some("loss-fused") => step.loss = LossKind::Fused,
        Some("optimizer-in-backward") => step.optimizer_in_backward = true,
        Some("activation-offload") => step.activation_offload = true,
        Some("adamw-fused") => optimizer = Optimizer::AdamWFused,
        Some(other) => return Err(unsupported(r, "technique", other)),
    }
    Ok(MemorySettings {
        precision,
        base_dtype,
        optimizer,
        step_counters: true,
        activations: ActivationSettings {
            model: ActivationModel::Model,
            attention,
            // peft's `prepare_model_for_kbit_training` turns checkpointing on reentrant
            // (`use_reentrant=True`); transformers' `gradient_checkpointing_enable()` does not.
            checkpointing: match (r.gradient_checkpointing, prepared) {
                (false, _) => Checkpointing::None,
                (true, false) => Checkpointing::Full,
                (true, true) => Checkpointing::Reentrant,
            },
            dropout: None,
        },
        workload: Workload {
            batch: r.batch,
            seq: r.seq,
        },
        sharding: Sharding::default(),
        step,
    })
}

/// The inputs ftbudget needs for a record.
pub fn peak_inputs(
    r: &PeakRecord,
) -> Result<(ModelShape, TrainingPlan, MemorySettings), MeasurementError> {
    let model_error = |message: String| MeasurementError::Model {
        id: r.id.clone(),
        message,
    };
    let model = shape_of(&r.shape, &r.model, &r.id)?;
    let registry = ftbudget_roster::registry().map_err(|e| model_error(e.to_string()))?;
    let regime = registry
        .build(&peak_regime_spec(r)?)
        .map_err(|e| model_error(e.to_string()))?;
    let plan = regime
        .plan(&model)
        .map_err(|e| model_error(e.to_string()))?;
    Ok((model, plan, peak_settings(r)?))
}

/// ftbudget's answer for a record: the estimate (its `peak` the larger step's) and the peak of
/// each step with its categories.
pub struct PeakPrediction {
    pub estimate: MemoryEstimate,
    pub first: StepPeak,
    pub steady: StepPeak,
}

/// ftbudget's estimate and step peaks for the record's configuration.
pub fn predict_peak(r: &PeakRecord) -> Result<PeakPrediction, MeasurementError> {
    let (model, plan, settings) = peak_inputs(r)?;
    let model_error = |e: ftbudget_core::CountError| MeasurementError::Model {
        id: r.id.clone(),
        message: e.to_string(),
    };
    let estimate = ftbudget_core::estimate_memory(&model, &plan, &settings).map_err(model_error)?;
    let [first, steady] =
        ftbudget_core::memory::step_peaks(&model, &plan, &settings).map_err(model_error)?;
    Ok(PeakPrediction {
        estimate,
        first,
        steady,
    })
}

/// `MemTracker`'s categories in ftbudget's: buffers count with the parameters, the input ids
/// (`other`) are the inputs.
pub fn measured_categories(c: &Categories) -> LiveBytes {
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    LiveBytes {
        parameters: get("parameters") + get("buffers"),
        gradients: get("gradients"),
        optimizer: get("optimizer"),
        activations: get("activations"),
        temporaries: get("temporaries"),
        inputs: get("other"),
    }
}

/// The categories in a fixed order, named, for per-category checks.
pub fn categories(l: &LiveBytes) -> [(&'static str, u64); 6] {
    [
        ("parameters", l.parameters),
        ("gradients", l.gradients),
        ("optimizer", l.optimizer),
        ("activations", l.activations),
        ("temporaries", l.temporaries),
        ("inputs", l.inputs),
    ]
}

/// The categories of a predicted step peak more than 10% off the measured ones, among those
/// holding more than 5% of the measured peak: `(category, predicted, measured)`.
pub fn category_misses(
    predicted: &LiveBytes,
    measured: &StepRecord,
) -> Vec<(&'static str, u64, u64)> {
    let m = measured_categories(&measured.by_category);
    categories(predicted)
        .into_iter()
        .zip(categories(&m))
        .filter(|&((_, p), (_, mb))| {
            let off = (p as f64 - mb as f64).abs() > 0.10 * mb as f64;
            mb * 20 > measured.peak_bytes && off
        })
        .map(|((cat, p), (_, mb))| (cat, p, mb))
        .collect()
}

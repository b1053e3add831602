//! The one row schema of machine-readable rows: `ftbudget estimate --format csv|jsonl` and
//! `ftbudget sweep` write the same columns, defined once by [`RowRecord`] (the field names are the
//! column names, the constructor says how each value is obtained). CSV goes through the `csv`
//! crate and JSON lines through `serde_json`, both serializing that one struct, so a column cannot
//! be added to one format or one command and forgotten in the other.
//!
//! Rows borrow their text (model, regime, label) from values built once per model and per regime,
//! and numbers are written straight into the output buffer: writing a row allocates nothing.

use crate::{ModelSummary, ReportError};
use ftbudget_core::{MemoryEstimate, RegimeSpec, StepFlops, Workload};
use serde::Serialize;

/// A machine-readable row format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    /// Comma-separated values with one header line.
    Csv,
    /// One JSON object per line, keyed by the same names as the CSV header.
    Jsonl,
}

/// A regime's columns, computed once per regime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegimeColumns {
    /// The canonical spec (`lora:r=8`).
    pub spec: String,
    /// The display label (`LoRA r=8`).
    pub label: String,
    /// The spec's `r` option, for regimes that have one.
    pub rank: Option<u64>,
}

impl RegimeColumns {
    pub fn new(spec: String, label: String) -> Self {
        let rank = spec.parse::<RegimeSpec>().ok().and_then(|parsed| {
            parsed
                .options
                .iter()
                .find(|(key, _)| key == "r")
                .and_then(|(_, value)| value.parse().ok())
        });
        RegimeColumns { spec, label, rank }
    }
}

/// Parameter counts of one row, as peft counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// The base model's own parameters.
    pub base: u64,
    pub trainable: u64,
    pub frozen: u64,
    /// peft's `all params` (base + adapters + saved copies).
    pub all: u64,
}

/// One row: a regime on a model at one workload. The field order is the column order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RowRecord<'a> {
    pub model: &'a str,
    pub family: &'a str,
    /// Hidden size.
    pub width: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub intermediate: u64,
    pub regime: &'a str,
    pub label: &'a str,
    /// Empty (CSV) or `null` (JSON) for regimes without a rank.
    pub rank: Option<u64>,
    pub batch: u64,
    pub seq: u64,
    /// Data-parallel GPUs; every byte figure is per GPU (the total over all of them is
    /// `total_bytes x gpus`).
    pub gpus: u64,
    pub base_params: u64,
    pub trainable_params: u64,
    pub frozen_params: u64,
    pub all_params: u64,
    /// trainable / all params.
    pub trainable_fraction: f64,
    pub weights_bytes: u64,
    pub gradients_bytes: u64,
    pub optimizer_bytes: u64,
    pub activations_bytes: u64,
    pub weight_casts_bytes: u64,
    pub total_bytes: u64,
    /// The most bytes alive at one moment of the step (the larger of the first and a
    /// steady-state step), per GPU; `peak_phase` and `peak_step` say where.
    pub peak_bytes: u64,
    pub peak_phase: &'static str,
    pub peak_step: &'static str,
    /// FLOPs of one step on one GPU's micro-batch (FlopCounterMode's count): the forward, the
    /// backward's gradient matmuls, checkpointing's recompute, their sum, and the sum per token.
    pub flops_forward: u128,
    pub flops_backward: u128,
    pub flops_recompute: u128,
    pub flops_step: u128,
    pub flops_per_token: u128,
    /// Time (`sweep`; empty in `estimate`'s rows): the GPU preset and MFU the step is timed at,
    /// the step's seconds, and with a token count the run's tokens, wall hours, GPU-hours and
    /// cost (`ftbudget_sweep::timing`).
    pub timing_gpu: Option<&'a str>,
    pub mfu: Option<f64>,
    pub step_seconds: Option<f64>,
    pub tokens: Option<u128>,
    pub wall_hours: Option<f64>,
    pub gpu_hours: Option<f64>,
    pub cost: Option<f64>,
}

/// The time columns of one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeColumns<'a> {
    pub gpu: &'a str,
    pub mfu: f64,
    pub step_seconds: f64,
    /// With a token count: the run's tokens, wall hours, GPU-hours and cost (with a price).
    pub run: Option<RunColumns>,
}

/// A run's columns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunColumns {
    pub tokens: u128,
    pub wall_hours: f64,
    pub gpu_hours: f64,
    pub cost: Option<f64>,
}

impl<'a> RowRecord<'a> {
    pub fn new(
        model: &'a ModelSummary,
        regime: &'a RegimeColumns,
        workload: Workload,
        params: ParamCounts,
        memory: &MemoryEstimate,
    ) -> Self {
        RowRecord {
            model: &model.name,
            family: &model.family,
            width: model.hidden_size,
            layers: model.num_hidden_layers,
            heads: model.num_attention_heads,
            kv_heads: model.num_key_value_heads,
            intermediate: model.intermediate_size,
            regime: &regime.spec,
            label: &regime.label,
            rank: regime.rank,
            batch: workload.batch,
            seq: workload.seq,
            gpus: memory.gpus,
            base_params: params.base,
            trainable_params: params.trainable,
            frozen_params: params.frozen,
            all_params: params.all,
            trainable_fraction: if params.all == 0 {
                0.0
            } else {
                params.trainable as f64 / params.all as f64
            },
            weights_bytes: memory.weights,
            gradients_bytes: memory.gradients,
            optimizer_bytes: memory.optimizer,
            activations_bytes: memory.activations,
            weight_casts_bytes: memory.weight_casts,
            total_bytes: memory.total,
            peak_bytes: memory.peak.bytes,
            peak_phase: memory.peak.phase.name(),
            peak_step: memory.peak.step.name(),
            flops_forward: 0,
            flops_backward: 0,
            flops_recompute: 0,
            flops_step: 0,
            flops_per_token: 0,
            timing_gpu: None,
            mfu: None,
            step_seconds: None,
            tokens: None,
            wall_hours: None,
            gpu_hours: None,
            cost: None,
        }
    }

    /// The row with the step's FLOP columns filled in.
    pub fn with_flops(mut self, flops: &StepFlops) -> Self {
        self.flops_forward = flops.forward;
        self.flops_backward = flops.backward;
        self.flops_recompute = flops.recompute;
        self.flops_step = flops.step;
        self.flops_per_token = flops.per_token;
        self
    }

    /// The row with its time columns filled in.
    pub fn with_time(mut self, time: &TimeColumns<'a>) -> Self {
        self.timing_gpu = Some(time.gpu);
        self.mfu = Some(time.mfu);
        self.step_seconds = Some(time.step_seconds);
        if let Some(run) = time.run {
            self.tokens = Some(run.tokens);
            self.wall_hours = Some(run.wall_hours);
            self.gpu_hours = Some(run.gpu_hours);
            self.cost = run.cost;
        }
        self
    }
}

/// Append `records` to `out` in `format`; `header` writes the CSV header line first (JSON lines
/// have none).
pub fn write_rows<'a>(
    format: RowFormat,
    header: bool,
    records: impl IntoIterator<Item = RowRecord<'a>>,
    out: &mut Vec<u8>,
) -> Result<(), ReportError> {
    match format {
        RowFormat::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(header)
                .from_writer(out);
            for record in records {
                writer.serialize(record).map_err(ReportError::Csv)?;
            }
            writer
                .flush()
                .map_err(|e| ReportError::Csv(csv::Error::from(e)))?;
        }
        RowFormat::Jsonl => {
            for record in records {
                serde_json::to_writer(&mut *out, &record).map_err(ReportError::Json)?;
                out.push(b'\n');
            }
        }
    }
    Ok(())
}

//! The answers the CLI prints and the server sends, built once: `ftbudget estimate` and
//! `GET/POST /api/estimate` both call [`comparison`] (and [`comparison_json`] for JSON), `ftbudget
//! fit` and `/api/fit` both call [`fit`]. Errors name the `--regime` they come from, with the
//! cause as their `source()`, so the CLI's `error: ...` line and the server's `{"error": ...}`
//! read the same.
//!
//! The reserved estimate (what `nvidia-smi` would show, `ftbudget_core::memory::reserved`) is
//! added here, after the memory model: it is part of every answer but never of the estimate's
//! hot path.

use ftbudget_core::memory::reserved::{self, ReservedEstimate, model_statement, peak_budget};
use ftbudget_core::{
    CountError, CudaOverhead, FitMargin, FlopSettings, MemorySettings, ModelShape, Regime,
    Registry, StepFlops, step_flops,
};
use ftbudget_report::{Comparison, ReportError, compare, render_json};
use ftbudget_sweep::{
    FitAnswer, FitQuery, GpuMemory, MAX_RANK, RankSearch, RunCost, SweepError, Timing,
    spec_with_rank,
};
use serde::Serialize;
use thiserror::Error;

/// The seed lab's six regimes, the default comparison of `estimate`.
pub const DEFAULT_REGIMES: &[&str] = &[
    "full-ft",
    "lora:r=4",
    "lora:r=8",
    "lora:r=16",
    "qlora:r=8",
    "dora:r=8",
];

/// The regimes `fit` answers when none is given.
pub const DEFAULT_FIT_REGIMES: &[&str] = &["full-ft", "lora:r=8", "qlora:r=8", "dora:r=8"];

#[derive(Debug, Error)]
pub enum AnswerError {
    /// A regime that does not parse, is not registered, or that the model cannot take.
    #[error("--regime {spec}")]
    Regime {
        spec: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Count(#[from] CountError),
}

/// The given specs, or `defaults` when none is given.
pub fn regime_specs(given: &[String], defaults: &[&str]) -> Vec<String> {
    if given.is_empty() {
        defaults.iter().map(|s| s.to_string()).collect()
    } else {
        given.to_vec()
    }
}

fn regime_error(spec: &str, source: impl std::error::Error + Send + Sync + 'static) -> AnswerError {
    AnswerError::Regime {
        spec: spec.to_string(),
        source: Box::new(source),
    }
}

/// Build `spec` and plan it on `model`, so that a regime the model cannot take is an error that
/// names its `--regime`.
fn checked_regime(
    registry: &Registry,
    model: &ModelShape,
    spec: &str,
) -> Result<Box<dyn Regime>, AnswerError> {
    let regime = registry.build(spec).map_err(|e| regime_error(spec, e))?;
    regime.plan(model).map_err(|e| regime_error(spec, e))?;
    Ok(regime)
}

/// Every regime of `specs` built and checked on `model`.
pub fn regimes(
    registry: &Registry,
    model: &ModelShape,
    specs: &[String],
) -> Result<Vec<Box<dyn Regime>>, AnswerError> {
    specs
        .iter()
        .map(|s| checked_regime(registry, model, s))
        .collect()
}

/// Every regime of `specs` on `model` under `settings`, each row with its reserved estimate
/// under `overhead`; the first is the baseline of the ratios.
pub fn comparison(
    registry: &Registry,
    model: &ModelShape,
    specs: &[String],
    settings: &MemorySettings,
    overhead: &CudaOverhead,
) -> Result<Comparison, AnswerError> {
    let regimes = regimes(registry, model, specs)?;
    let mut cmp = compare(model, &regimes, settings)?;
    for row in &mut cmp.rows {
        row.reserved = Some(reserved::reserved(&row.peak, overhead)?);
    }
    Ok(cmp)
}

/// The JSON contract of `estimate --format json` (without the final newline the CLI adds).
pub fn comparison_json(cmp: &Comparison, settings: &MemorySettings) -> String {
    with_settings(&render_json(cmp), &SettingsEcho::of(settings))
}

/// Every memory setting used, each spelled as its flag takes it (the JSON outputs' `settings`).
#[derive(Debug, Clone, Serialize)]
pub struct SettingsEcho {
    pub batch: u64,
    pub seq: u64,
    pub precision: &'static str,
    pub base_dtype: &'static str,
    pub optimizer: &'static str,
    pub step_counters: bool,
    pub activations: &'static str,
    pub attention: &'static str,
    pub checkpointing: &'static str,
    pub dropout: f64,
    pub grad_accum: u64,
    pub loss: &'static str,
    pub optimizer_in_backward: bool,
    pub activation_offload: bool,
    pub gpus: u64,
    pub zero: u8,
}

impl SettingsEcho {
    pub fn of(s: &MemorySettings) -> Self {
        SettingsEcho {
            batch: s.workload.batch,
            seq: s.workload.seq,
            precision: s.precision.name(),
            base_dtype: s.frozen_dtype().name(),
            optimizer: s.optimizer.name(),
            step_counters: s.step_counters,
            activations: s.activations.model.name(),
            attention: s.activations.attention.name(),
            checkpointing: s.activations.checkpointing.name(),
            dropout: s.activations.dropout.unwrap_or(0.0),
            grad_accum: s.step.grad_accum,
            loss: s.step.loss.name(),
            optimizer_in_backward: s.step.optimizer_in_backward,
            activation_offload: s.step.activation_offload,
            gpus: s.sharding.gpus,
            zero: s.sharding.zero_stage,
        }
    }
}

/// `json` (a pretty-printed object) with `"settings": ...` as its first key.
pub fn with_settings(json: &str, echo: &SettingsEcho) -> String {
    let settings = serde_json::to_string_pretty(echo).expect("plain structs serialize");
    match json.strip_prefix("{\n") {
        Some(rest) => {
            let indented = settings.replace('\n', "\n  ");
            format!("{{\n  \"settings\": {indented},\n{rest}")
        }
        None => json.to_string(),
    }
}

/// `fit --format json`: the GPU, and for each regime whether it fits and the largest batch,
/// sequence and rank that do. A workload fits when its reserved estimate plus the margin stays
/// within the GPU's memory, that is when its peak is at most `peak_budget_bytes`; every limit
/// is solved against that budget, and each answer's `capacity_bytes` and `headroom_bytes` are
/// the budget's.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub settings: SettingsEcho,
    pub model: String,
    pub gpu: String,
    /// The GPU's memory (what `nvidia-smi` reports as its total).
    pub capacity_bytes: u64,
    pub gpus: u64,
    pub zero_stage: u8,
    /// The CUDA context counted in every reserved estimate.
    pub cuda_context_bytes: u64,
    /// The margin kept free, as a fraction of `capacity_bytes` (`5%`) and in bytes.
    pub margin: String,
    pub margin_bytes: u64,
    /// The largest peak whose reserved estimate plus the margin fits in `capacity_bytes`.
    pub peak_budget_bytes: u64,
    /// The reserved estimate's model, in one line.
    pub reserved_model: String,
    /// With a token count (`--tokens`): how the largest batch's step is timed and priced.
    pub timing: Option<FitTiming>,
    pub answers: Vec<FitRow>,
}

/// One regime's fit answer with the reserved estimate of its workload.
#[derive(Debug, Clone, Serialize)]
pub struct FitRow {
    #[serde(flatten)]
    pub answer: FitAnswer,
    /// The reserved estimate's bytes at the workload (context, segments).
    pub reserved: ReservedBytes,
    /// With a token count: the step at the largest batch that fits, timed and priced (`None`
    /// without `--tokens`, or when not even batch 1 fits).
    pub time_at_max_batch: Option<TimeAtBatch>,
}

/// What `fit` times the largest batch with: the shared timing (`ftbudget_sweep::timing`) and
/// the tokens of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FitTiming {
    #[serde(flatten)]
    pub timing: Timing,
    pub tokens: u128,
}

/// The step at the largest batch that fits (at the workload's sequence length), and a run of
/// the report's tokens in such steps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimeAtBatch {
    pub batch: u64,
    pub seq: u64,
    /// The batch is the search bound: larger ones may fit too.
    pub capped: bool,
    /// FLOPs of one step at that batch on one GPU, exact.
    pub flops: StepFlops,
    #[serde(flatten)]
    pub run: RunCost,
}

/// The figures of a [`ReservedEstimate`] without its statement (given once per report).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReservedBytes {
    pub bytes: u64,
    pub context_bytes: u64,
    pub allocator_rounding_bytes: u64,
}

impl From<&ReservedEstimate> for ReservedBytes {
    fn from(r: &ReservedEstimate) -> Self {
        ReservedBytes {
            bytes: r.bytes,
            context_bytes: r.context_bytes,
            allocator_rounding_bytes: r.allocator_rounding_bytes,
        }
    }
}

/// How `fit` turns a peak into a decision: the CUDA context and the margin it keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct FitOverhead {
    pub cuda: CudaOverhead,
    pub margin: FitMargin,
}

/// Answer every regime of `specs` for `model` on `gpu` (solved exactly by crates/sweep); with
/// `timing`, also time and price a run at each regime's largest batch.
pub fn fit(
    registry: &Registry,
    model: &ModelShape,
    specs: &[String],
    settings: &MemorySettings,
    gpu: &GpuMemory,
    overhead: &FitOverhead,
    timing: Option<&FitTiming>,
) -> Result<FitReport, AnswerError> {
    let margin_bytes = overhead.margin.bytes_of(gpu.bytes);
    let budget = peak_budget(gpu.bytes, margin_bytes, &overhead.cuda);
    let query = FitQuery {
        model,
        settings: settings.clone(),
        capacity: budget,
        max_batch: MemorySettings::MAX_BATCH,
        max_seq: model
            .position_limit()
            .map_or(MemorySettings::MAX_SEQ, |limit| {
                limit.min(MemorySettings::MAX_SEQ)
            }),
    };
    let mut answers = Vec::with_capacity(specs.len());
    for spec in specs {
        let answer = fit_one(&query, registry, spec).map_err(|e| regime_error(spec, e))?;
        let reserved = reserved::reserved_for_peak(answer.peak_bytes, &overhead.cuda)?;
        let time_at_max_batch = match (timing, answer.max_batch) {
            (Some(t), Some(limit)) => Some(
                time_at_batch(registry, model, spec, settings, limit, t)
                    .map_err(|e| regime_error(spec, e))?,
            ),
            _ => None,
        };
        answers.push(FitRow {
            answer,
            reserved: ReservedBytes::from(&reserved),
            time_at_max_batch,
        });
    }
    Ok(FitReport {
        settings: SettingsEcho::of(settings),
        model: model.name.clone(),
        gpu: gpu.name.clone(),
        capacity_bytes: gpu.bytes,
        gpus: settings.sharding.gpus,
        zero_stage: settings.sharding.zero_stage,
        cuda_context_bytes: overhead.cuda.context_bytes,
        margin: overhead.margin.to_string(),
        margin_bytes,
        peak_budget_bytes: budget,
        reserved_model: model_statement(&overhead.cuda),
        timing: timing.copied(),
        answers,
    })
}

/// `spec`'s step at the batch of `limit`, timed by `t`.
fn time_at_batch(
    registry: &Registry,
    model: &ModelShape,
    spec: &str,
    settings: &MemorySettings,
    limit: ftbudget_sweep::Limit,
    t: &FitTiming,
) -> Result<TimeAtBatch, SweepError> {
    let plan = registry.build(spec)?.plan(model)?;
    let mut at = FlopSettings::of(settings);
    at.batch = limit.value;
    let flops = step_flops(model, &plan, &at)?;
    let overflow = CountError { what: "flops" };
    let tokens_per_gpu_step = at.batch.checked_mul(at.seq).ok_or(overflow.clone())?;
    let run = t
        .timing
        .run(&flops, tokens_per_gpu_step, t.tokens)
        .ok_or(overflow)?;
    Ok(TimeAtBatch {
        batch: at.batch,
        seq: at.seq,
        capped: limit.capped,
        flops,
        run,
    })
}

/// One regime's answer; a regime with a rank option also gets the largest rank that fits.
fn fit_one(query: &FitQuery<'_>, registry: &Registry, spec: &str) -> Result<FitAnswer, SweepError> {
    let regime = registry.build(spec)?;
    let name = spec.split(':').next().unwrap_or(spec).trim();
    // The rank search sets the option the regime declares as its rank, if it has one.
    let rank_option = registry.get(name)?.rank_option;
    let build = |r: u64| -> Result<_, SweepError> {
        let text = spec_with_rank(spec, rank_option.unwrap_or_default(), r)?;
        Ok(registry.build(&text)?)
    };
    let search = rank_option.is_some().then_some(RankSearch {
        max: MAX_RANK,
        build: &build,
    });
    query.answer(regime.as_ref(), search)
}

/// An error and its causes on one line, `a: b: c`, as the CLI prints them.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text.replace('\n', " ")
}

//! The answers the CLI prints and the server sends, built once: `ftbudget estimate` and
//! `GET/POST /api/estimate` both call [`comparison`] (and [`comparison_json`] for JSON), `ftbudget
//! fit` and `/api/fit` both call [`fit`]. Errors name the `--regime` they come from, with the
//! cause as their `source()`, so the CLI's `error: ...` line and the server's `{"error": ...}`
//! read the same.

use ftbudget_core::{Checkpointing, MemorySettings, ModelShape, Regime, Registry};
use ftbudget_report::{Comparison, ReportError, compare, render_json};
use ftbudget_sweep::{
    FitAnswer, FitQuery, GpuMemory, MAX_RANK, RankSearch, SweepError, spec_with_rank,
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

/// Every regime of `specs` on `model` under `settings`; the first is the baseline of the ratios.
pub fn comparison(
    registry: &Registry,
    model: &ModelShape,
    specs: &[String],
    settings: &MemorySettings,
) -> Result<Comparison, AnswerError> {
    let regimes = specs
        .iter()
        .map(|s| checked_regime(registry, model, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(compare(model, &regimes, settings)?)
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
            checkpointing: match s.activations.checkpointing {
                Checkpointing::None => "none",
                Checkpointing::Full => "full",
            },
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
/// sequence and rank that do.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub settings: SettingsEcho,
    pub model: String,
    pub gpu: String,
    pub capacity_bytes: u64,
    pub gpus: u64,
    pub zero_stage: u8,
    pub answers: Vec<FitAnswer>,
}

/// Answer every regime of `specs` for `model` on `gpu` (solved exactly by crates/sweep).
pub fn fit(
    registry: &Registry,
    model: &ModelShape,
    specs: &[String],
    settings: &MemorySettings,
    gpu: &GpuMemory,
) -> Result<FitReport, AnswerError> {
    let query = FitQuery {
        model,
        settings: settings.clone(),
        capacity: gpu.bytes,
        max_batch: MemorySettings::MAX_BATCH,
        max_seq: model
            .position_limit()
            .map_or(MemorySettings::MAX_SEQ, |limit| {
                limit.min(MemorySettings::MAX_SEQ)
            }),
    };
    let mut answers = Vec::with_capacity(specs.len());
    for spec in specs {
        answers.push(fit_one(&query, registry, spec).map_err(|e| regime_error(spec, e))?);
    }
    Ok(FitReport {
        settings: SettingsEcho::of(settings),
        model: model.name.clone(),
        gpu: gpu.name.clone(),
        capacity_bytes: gpu.bytes,
        gpus: settings.sharding.gpus,
        zero_stage: settings.sharding.zero_stage,
        answers,
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

//! TOML pieces shared by experiment kinds: regimes with display labels, memory settings keyed
//! like the CLI flags, chart size. Every struct rejects unknown keys.

use super::Experiment;
use anyhow::Result;
use ftbudget_core::{
    ActivationModel, AttentionImpl, Checkpointing, DType, MemorySettings, ModelShape, Optimizer,
    Precision, Regime, Registry, Sharding, Workload,
};
use ftbudget_report::chart::Size;
use ftbudget_report::template::bullet_list;
use ftbudget_report::{Comparison, compare};
use serde::Deserialize;
use std::str::FromStr;

/// `[[regimes]]`: a regime spec as the CLI's `--regime` takes it and the label shown for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegimeEntry {
    pub spec: String,
    pub label: String,
}

/// Build every regime; an unknown regime or option names `regimes[i].spec`.
pub fn build_regimes(
    exp: &Experiment,
    registry: &Registry,
    entries: &[RegimeEntry],
) -> Result<Vec<Box<dyn Regime>>> {
    if entries.is_empty() {
        return Err(exp.key_error("regimes", "at least one regime is needed"));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            registry
                .build(&e.spec)
                .map_err(|err| exp.key_error(&format!("regimes[{i}].spec"), err))
        })
        .collect()
}

/// Compare `regimes` (built from `entries`) on `model`, each row labelled with its entry's
/// label; an error names config key `key`.
pub fn labelled_comparison(
    exp: &Experiment,
    key: &str,
    model: &ModelShape,
    regimes: &[Box<dyn Regime>],
    entries: &[RegimeEntry],
    settings: &MemorySettings,
) -> Result<Comparison> {
    let mut cmp = compare(model, regimes, settings).map_err(|e| exp.key_error(key, e))?;
    for (row, entry) in cmp.rows.iter_mut().zip(entries) {
        row.label = entry.label.clone();
    }
    Ok(cmp)
}

fn default_gpus() -> u64 {
    1
}

/// `[memory]`: every key is the CLI flag of the same name (`base_dtype` is `--base-dtype`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryKeys {
    pub precision: String,
    #[serde(default)]
    pub base_dtype: Option<String>,
    pub optimizer: String,
    pub step_counters: bool,
    pub activations: String,
    pub attention: String,
    pub checkpointing: String,
    #[serde(default)]
    pub dropout: Option<f64>,
    pub batch: u64,
    pub seq: u64,
    #[serde(default = "default_gpus")]
    pub gpus: u64,
    #[serde(default)]
    pub zero: u8,
}

fn parse_key<T>(exp: &Experiment, key: &str, v: &str) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    v.parse()
        .map_err(|e: T::Err| exp.key_error(&format!("memory.{key}"), e))
}

impl MemoryKeys {
    pub fn settings(&self, exp: &Experiment) -> Result<MemorySettings> {
        let mut s = MemorySettings::seed();
        s.precision = parse_key::<Precision>(exp, "precision", &self.precision)?;
        s.base_dtype = match &self.base_dtype {
            None => None,
            Some(d) => Some(parse_key::<DType>(exp, "base_dtype", d)?),
        };
        s.optimizer = parse_key::<Optimizer>(exp, "optimizer", &self.optimizer)?;
        s.step_counters = self.step_counters;
        s.activations.model = parse_key::<ActivationModel>(exp, "activations", &self.activations)?;
        s.activations.attention = parse_key::<AttentionImpl>(exp, "attention", &self.attention)?;
        s.activations.checkpointing =
            parse_key::<Checkpointing>(exp, "checkpointing", &self.checkpointing)?;
        s.activations.dropout = self.dropout;
        s.workload = Workload {
            batch: self.batch,
            seq: self.seq,
        };
        s.sharding = Sharding {
            gpus: self.gpus,
            zero_stage: self.zero,
        };
        // The same checks and limits as the CLI's flags, named by this table's key.
        s.validate()
            .map_err(|e| exp.key_error(&format!("memory.{}", e.setting), e.problem))?;
        Ok(s)
    }

    /// `(flag, value, meaning)` for every setting, as `ftbudget estimate` takes them.
    pub fn flags(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut out = vec![
            (
                "--precision",
                self.precision.clone(),
                "how weights, master copies and gradients are held",
            ),
            (
                "--base-dtype",
                self.base_dtype
                    .clone()
                    .unwrap_or_else(|| "(follows the precision)".into()),
                "dtype of frozen weights",
            ),
            (
                "--optimizer",
                self.optimizer.clone(),
                "optimizer and its state",
            ),
            (
                "--step-counters",
                self.step_counters.to_string(),
                "count the optimizer's per-tensor step counters",
            ),
            (
                "--activations",
                self.activations.clone(),
                "activation model",
            ),
            (
                "--attention",
                self.attention.clone(),
                "attention implementation (per-operation model only)",
            ),
            (
                "--checkpointing",
                self.checkpointing.clone(),
                "activation checkpointing (per-operation model only)",
            ),
            (
                "--dropout",
                self.dropout
                    .map_or_else(|| "(none)".to_string(), |p| p.to_string()),
                "dropout probability (masks saved above 0)",
            ),
            (
                "--batch",
                self.batch.to_string(),
                "micro-batch size per GPU",
            ),
            ("--seq", self.seq.to_string(), "sequence length in tokens"),
            ("--gpus", self.gpus.to_string(), "data-parallel GPUs"),
            ("--zero", self.zero.to_string(), "DeepSpeed ZeRO stage"),
        ];
        if self.base_dtype.is_none() {
            out.retain(|(f, _, _)| *f != "--base-dtype");
        }
        if self.dropout.is_none() {
            out.retain(|(f, _, _)| *f != "--dropout");
        }
        out
    }
}

impl MemoryKeys {
    /// The settings as a Markdown list, one `- \`--flag value\`: meaning` line each.
    pub fn markdown_list(&self) -> String {
        self.markdown_list_except(&[])
    }

    /// [`MemoryKeys::markdown_list`] without the flags in `skip` (a setting a report varies).
    pub fn markdown_list_except(&self, skip: &[&str]) -> String {
        bullet_list(
            self.flags()
                .into_iter()
                .filter(|(flag, _, _)| !skip.contains(flag))
                .map(|(flag, value, meaning)| format!("`{flag} {value}`: {meaning}")),
        )
    }
}

/// The regimes as a Markdown list, one `- label: \`--regime spec\`` line each.
pub fn regime_list(entries: &[RegimeEntry]) -> String {
    bullet_list(
        entries
            .iter()
            .map(|e| format!("{}: `--regime {}`", e.label, e.spec)),
    )
}

fn default_width() -> u32 {
    Size::default().width
}

fn default_height() -> u32 {
    Size::default().height
}

/// `[chart]`: output file, title and pixel size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartKeys {
    pub file: String,
    pub title: String,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
}

impl ChartKeys {
    pub fn size(&self) -> Size {
        Size {
            width: self.width,
            height: self.height,
        }
    }
}

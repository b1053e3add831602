//! Published peaks as an outside check for experiment 33: figures a project measured on real
//! GPUs (torchtune's README, "Optimization flags": Llama 3.2 3B, one technique added per row),
//! each set against ftbudget's peak for the same step, with the metric each figure reports and
//! what ftbudget does not model stated beside it.

use super::Experiment;
use super::format::signed_percent;
use anyhow::Result;
use ftbudget_core::{
    Checkpointing, LossKind, MemorySettings, Optimizer, Precision, estimate_memory,
};
use ftbudget_report::units;
use serde::Deserialize;
use std::fmt::Write as _;

/// `[published]` in experiment.toml: one source, its setting and its rows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// Where the figures are published (document, commit).
    pub source: String,
    /// What the figures measure, as the source defines it.
    pub metric: String,
    pub model: String,
    pub batch: u64,
    pub seq: u64,
    /// A `--precision` value.
    pub precision: String,
    pub rows: Vec<PublishedRow>,
}

/// One published figure and the step it was measured on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedRow {
    /// The source's own label for the row.
    pub technique: String,
    pub regime: String,
    /// The figure as published, in GiB.
    pub published_gib: f64,
    /// An `--optimizer` value.
    pub optimizer: String,
    /// A `--loss` value (default `full`).
    #[serde(default)]
    pub loss: Option<String>,
    #[serde(default)]
    pub checkpointing: bool,
    #[serde(default)]
    pub optimizer_in_backward: bool,
    #[serde(default)]
    pub activation_offload: bool,
    /// The run used `torch.compile`, whose fusions ftbudget does not model.
    #[serde(default)]
    pub compiled: bool,
}

/// The published figure and ftbudget's peak for one row.
pub struct Checked {
    pub technique: String,
    pub published: f64,
    pub predicted: u64,
    pub compiled: bool,
}

impl Checked {
    pub fn error(&self) -> f64 {
        let predicted = self.predicted as f64 / (1u64 << 30) as f64;
        (predicted - self.published) / self.published
    }
}

/// ftbudget's peak for every row of `p`.
pub fn check(exp: &Experiment, p: &Published) -> Result<Vec<Checked>> {
    let model = ftbudget_models::load(&p.model).map_err(|e| exp.key_error("published.model", e))?;
    let registry = ftbudget_roster::registry()?;
    let mut out = Vec::with_capacity(p.rows.len());
    for (i, row) in p.rows.iter().enumerate() {
        let key = format!("published.rows[{i}]");
        let parse_err = |field: &str, e: ftbudget_core::UnknownName| {
            exp.key_error(&format!("{key}.{field}"), e)
        };
        let mut s = MemorySettings::pytorch();
        s.workload.batch = p.batch;
        s.workload.seq = p.seq;
        s.precision = p
            .precision
            .parse::<Precision>()
            .map_err(|e| exp.key_error("published.precision", e))?;
        s.optimizer = row
            .optimizer
            .parse::<Optimizer>()
            .map_err(|e| parse_err("optimizer", e))?;
        if let Some(loss) = &row.loss {
            s.step.loss = loss.parse::<LossKind>().map_err(|e| parse_err("loss", e))?;
        }
        s.step.optimizer_in_backward = row.optimizer_in_backward;
        s.step.activation_offload = row.activation_offload;
        if row.checkpointing {
            s.activations.checkpointing = Checkpointing::Full;
        }
        s.validate().map_err(|e| exp.key_error(&key, e))?;
        let regime = registry
            .build(&row.regime)
            .map_err(|e| exp.key_error(&key, e))?;
        let plan = regime.plan(&model).map_err(|e| exp.key_error(&key, e))?;
        let estimate = estimate_memory(&model, &plan, &s).map_err(|e| exp.key_error(&key, e))?;
        out.push(Checked {
            technique: row.technique.clone(),
            published: row.published_gib,
            predicted: estimate.peak.bytes,
            compiled: row.compiled,
        });
    }
    Ok(out)
}

/// The markdown table of `checked` against the rows of `p`.
pub fn table(p: &Published, checked: &[Checked]) -> String {
    let mut out = String::from(
        "| Technique (cumulative) | Regime | Published | ftbudget peak | Difference | torch.compile |\n|---|---|---:|---:|---:|---|\n",
    );
    for (row, c) in p.rows.iter().zip(checked) {
        let _ = writeln!(
            out,
            "| {} | `{}` | {:.1} GiB | {} | {} | {} |",
            c.technique,
            row.regime,
            c.published,
            units::binary(c.predicted),
            signed_percent(c.error()),
            if c.compiled {
                "yes (not modelled)"
            } else {
                "no"
            }
        );
    }
    out
}

/// One paragraph on the rows measured without `torch.compile` (comparable) and those with it.
pub fn prose(checked: &[Checked]) -> String {
    let eager: Vec<&Checked> = checked.iter().filter(|c| !c.compiled).collect();
    let compiled: Vec<&Checked> = checked.iter().filter(|c| c.compiled).collect();
    let worst = |rows: &[&Checked]| {
        rows.iter()
            .map(|c| c.error())
            .fold(0.0f64, |w, e| if e.abs() > w.abs() { e } else { w })
    };
    let mut text = String::new();
    if !eager.is_empty() {
        let _ = write!(
            text,
            "Measured without `torch.compile` ({} row{}), ftbudget's peak is within {} of the published figure.",
            eager.len(),
            if eager.len() == 1 { "" } else { "s" },
            signed_percent(worst(&eager))
        );
    }
    if !compiled.is_empty() {
        let above = compiled.iter().filter(|c| c.error() > 0.0).count();
        let _ = write!(
            text,
            " The {} rows run with `torch.compile`, whose fused kernels save fewer intermediate tensors than the eager step ftbudget models: ftbudget is above the published figure on {above} of them (largest difference {}). The comparison therefore checks the direction and size of each technique's effect, not the compiled figures themselves.",
            compiled.len(),
            signed_percent(worst(&compiled))
        );
    }
    text
}

//! Turning estimates into something a person reads: a [`Comparison`] of regimes on one model (the
//! first regime is the baseline), rendered as a terminal table, Markdown, the stable JSON contract
//! (serde), or rows of the one schema [`export`] shares with sweeps (CSV through the `csv` crate,
//! JSON lines through serde). Byte figures are exact integers in JSON and CSV and binary units
//! (KiB/MiB/GiB, labelled) in tables. [`chart`] draws PNG charts with an embedded font (no system fonts, same
//! bytes every run) and [`template`] fills `{{name}}` placeholders in report prose; `cargo xtask
//! report` uses both to regenerate the experiments.

pub mod chart;
pub mod export;
pub mod template;
pub mod timeline;
pub mod units;

use comfy_table::{Cell, CellAlignment, Table, presets};
use export::{ParamCounts, RegimeColumns, RowFormat, RowRecord, write_rows};
use ftbudget_core::{
    CountError, FlopSettings, MemoryEstimate, MemorySettings, ModelShape, Regime, RegimeError,
    StepFlops, Workload, estimate_memory, step_flops,
};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error(transparent)]
    Regime(#[from] RegimeError),
    #[error(transparent)]
    Count(#[from] CountError),
    #[error("at least one regime is needed")]
    NoRegimes,
    // Output errors carry their cause in the message only (not also as `source()`).
    #[error("writing CSV: {0}")]
    Csv(csv::Error),
    #[error("writing JSON: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
}

/// The model part of the JSON contract.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub family: String,
    pub hidden_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub intermediate_size: u64,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    pub total_params: u64,
}

impl ModelSummary {
    pub fn of(model: &ModelShape) -> Self {
        let d = model.dims;
        ModelSummary {
            name: model.name.clone(),
            family: model.family.name().to_string(),
            hidden_size: d.hidden,
            num_hidden_layers: d.layers,
            num_attention_heads: d.heads,
            num_key_value_heads: d.kv_heads,
            head_dim: d.head_dim,
            intermediate_size: d.intermediate,
            vocab_size: d.vocab,
            tie_word_embeddings: model.tied_embeddings,
            total_params: model.total_params(),
        }
    }
}

/// Bytes per bucket, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bytes {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub weight_casts: u64,
    /// Per GPU.
    pub total: u64,
    /// Data-parallel GPUs the figures above are per.
    pub gpus: u64,
    /// `total` summed over every GPU.
    pub total_all_gpus: u64,
}

impl From<&MemoryEstimate> for Bytes {
    fn from(e: &MemoryEstimate) -> Self {
        Bytes {
            weights: e.weights,
            gradients: e.gradients,
            optimizer: e.optimizer,
            activations: e.activations,
            weight_casts: e.weight_casts,
            total: e.total,
            gpus: e.gpus,
            total_all_gpus: e.total_all_gpus,
        }
    }
}

/// One regime's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub regime: String,
    pub label: String,
    pub trainable_params: u64,
    pub frozen_params: u64,
    /// peft's `all params`: base + adapters + modules_to_save copies.
    pub all_params: u64,
    /// The base model's own parameters.
    pub base_params: u64,
    /// trainable / all params.
    pub trainable_fraction: f64,
    pub bytes: Bytes,
    /// Activation bytes by component (per GPU).
    pub activations: ftbudget_core::memory::ActivationBreakdown,
    /// The most bytes alive at one moment of the step, per GPU (`bytes`: the larger of the first
    /// and a steady-state step; where it happens and what it holds).
    pub peak: ftbudget_core::PeakEstimate,
    /// What `nvidia-smi` would show at the peak (an estimate: the CUDA context and the
    /// allocator's segments, `ftbudget_core::memory::reserved`); filled by the answer layer, not
    /// by [`compare`], and left out of the JSON when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<ftbudget_core::ReservedEstimate>,
    /// This row's total bytes over the baseline's (the first row).
    pub ratio_vs_baseline: f64,
    /// FLOPs of one training step on one GPU's micro-batch, as PyTorch's FlopCounterMode counts
    /// them (`ftbudget_core::flops`).
    pub flops: StepFlops,
    #[serde(skip)]
    pub estimate: MemoryEstimate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub model: ModelSummary,
    pub rows: Vec<Row>,
}

/// Evaluate every regime on `model` under `settings`.
pub fn compare(
    model: &ModelShape,
    regimes: &[Box<dyn Regime>],
    settings: &MemorySettings,
) -> Result<Comparison, ReportError> {
    if regimes.is_empty() {
        return Err(ReportError::NoRegimes);
    }
    let mut rows = Vec::with_capacity(regimes.len());
    for regime in regimes {
        let plan = regime.plan(model)?;
        let estimate = estimate_memory(model, &plan, settings)?;
        let trainable = plan.trainable_params()?;
        let all = plan.all_params()?;
        let flops = step_flops(model, &plan, &FlopSettings::of(settings))?;
        rows.push(Row {
            regime: regime.spec(),
            label: regime.label(),
            trainable_params: trainable,
            frozen_params: plan.frozen_params()?,
            all_params: all,
            base_params: plan.base_params()?,
            trainable_fraction: trainable as f64 / all as f64,
            bytes: Bytes::from(&estimate),
            activations: estimate.detail.activations.clone(),
            peak: estimate.peak,
            reserved: None,
            ratio_vs_baseline: 0.0,
            flops,
            estimate,
        });
    }
    let baseline = rows[0].bytes.total as f64;
    for row in &mut rows {
        row.ratio_vs_baseline = row.bytes.total as f64 / baseline;
    }
    Ok(Comparison {
        model: ModelSummary::of(model),
        rows,
    })
}

/// Thousands separators: 1234567 -> "1,234,567".
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStyle {
    Terminal,
    Markdown,
}

/// Column headers that differ between uses of the comparison table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLabels {
    /// The optimizer-state column: `Optimizer` in the CLI, `Adam` in the seed lab's table.
    pub optimizer: String,
    /// The last column: `Ratio vs <baseline>`.
    pub ratio: String,
}

impl TableLabels {
    /// The CLI's headers: `Optimizer` and `Ratio vs <baseline_name>`.
    pub fn new(baseline_name: &str) -> Self {
        TableLabels {
            optimizer: "Optimizer".into(),
            ratio: format!("Ratio vs {baseline_name}"),
        }
    }
}

/// The comparison table: Regime, Trainable params, Frozen params, Weights, Grads, Optimizer
/// state, Activations, Total, Peak (the most bytes alive at one moment of the step), Reserved
/// (est.) when the rows carry a reserved estimate, Ratio vs the first row (of the totals).
pub fn render_table(cmp: &Comparison, style: TableStyle, baseline_name: &str) -> String {
    render_table_with(cmp, style, &TableLabels::new(baseline_name))
}

/// [`render_table`] with chosen column headers.
pub fn render_table_with(cmp: &Comparison, style: TableStyle, labels: &TableLabels) -> String {
    let mut table = Table::new();
    table.load_preset(match style {
        TableStyle::Terminal => presets::UTF8_FULL_CONDENSED,
        TableStyle::Markdown => presets::ASCII_MARKDOWN,
    });
    let has_casts = cmp.rows.iter().any(|r| r.bytes.weight_casts > 0);
    let mut header = vec![
        "Regime".to_string(),
        "Trainable params".into(),
        "Frozen params".into(),
        "Weights".into(),
        "Grads".into(),
        labels.optimizer.clone(),
        "Activations".into(),
    ];
    if has_casts {
        header.push("Weight casts".into());
    }
    let gpus = cmp.rows.iter().map(|r| r.bytes.gpus).max().unwrap_or(1);
    if gpus > 1 {
        header.push("Total per GPU".into());
        header.push(format!("Total ({gpus} GPUs)"));
    } else {
        header.push("Total".into());
    }
    header.push(if gpus > 1 { "Peak per GPU" } else { "Peak" }.into());
    let has_reserved = cmp.rows.iter().any(|r| r.reserved.is_some());
    if has_reserved {
        header.push(
            if gpus > 1 {
                "Reserved per GPU (est.)"
            } else {
                "Reserved (est.)"
            }
            .into(),
        );
    }
    header.push(labels.ratio.clone());
    table.set_header(header);
    for row in &cmp.rows {
        let b = row.bytes;
        let mut cells = vec![
            Cell::new(&row.label),
            Cell::new(group_digits(row.trainable_params)),
            Cell::new(group_digits(row.frozen_params)),
            Cell::new(units::binary(b.weights)),
            Cell::new(units::binary(b.gradients)),
            Cell::new(units::binary(b.optimizer)),
            Cell::new(units::binary(b.activations)),
        ];
        if has_casts {
            cells.push(Cell::new(units::binary(b.weight_casts)));
        }
        cells.push(Cell::new(units::binary(b.total)));
        if gpus > 1 {
            cells.push(Cell::new(units::binary(b.total_all_gpus)));
        }
        cells.push(Cell::new(units::binary(row.peak.bytes)));
        if has_reserved {
            cells.push(Cell::new(
                row.reserved
                    .as_ref()
                    .map_or_else(|| "n/a".into(), |r| units::binary(r.bytes)),
            ));
        }
        cells.push(Cell::new(format!("{:.3}", row.ratio_vs_baseline)));
        table.add_row(cells);
    }
    let columns = table.column_count();
    for i in 1..columns {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    let text = table.to_string();
    match style {
        TableStyle::Terminal => text,
        TableStyle::Markdown => mark_right_aligned(&text),
    }
}

/// comfy-table pads numbers to the right but writes a plain `|---|` separator; Markdown
/// renderers need `---:` to right-align. Every column after the first holds numbers.
fn mark_right_aligned(table: &str) -> String {
    let mut out = String::with_capacity(table.len() + 16);
    for (i, line) in table.lines().enumerate() {
        if i == 1 {
            let cells: Vec<&str> = line.split('|').collect();
            let last = cells.len().saturating_sub(1);
            let marked: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(j, cell)| {
                    if j >= 2 && j < last && cell.len() > 1 && cell.bytes().all(|b| b == b'-') {
                        format!("{}:", &cell[..cell.len() - 1])
                    } else {
                        cell.to_string()
                    }
                })
                .collect();
            out.push_str(&marked.join("|"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

pub fn render_json(cmp: &Comparison) -> String {
    serde_json::to_string_pretty(cmp).expect("comparison serializes")
}

/// The comparison as rows of the schema shared with sweeps ([`export::RowRecord`]), one per
/// regime, at `workload`.
pub fn render_rows(
    cmp: &Comparison,
    workload: Workload,
    format: RowFormat,
) -> Result<String, ReportError> {
    let regimes: Vec<RegimeColumns> = cmp
        .rows
        .iter()
        .map(|r| RegimeColumns::new(r.regime.clone(), r.label.clone()))
        .collect();
    let records = cmp.rows.iter().zip(&regimes).map(|(row, regime)| {
        let params = ParamCounts {
            base: row.base_params,
            trainable: row.trainable_params,
            frozen: row.frozen_params,
            all: row.all_params,
        };
        RowRecord::new(&cmp.model, regime, workload, params, &row.estimate).with_flops(&row.flops)
    });
    let mut out = Vec::new();
    write_rows(format, true, records, &mut out)?;
    // Both writers emit UTF-8 from UTF-8 input, so nothing is replaced here.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_separator_right_aligns_numeric_columns() {
        let table = "| Regime | Total |\n|--------|-------|\n| LoRA   |     3 |";
        assert_eq!(
            mark_right_aligned(table),
            "| Regime | Total |\n|--------|------:|\n| LoRA   |     3 |\n"
        );
    }
}

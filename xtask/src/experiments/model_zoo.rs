//! Kind `model-zoo` (experiment 32): every family at its published sizes — parameters, the
//! trainable fraction of LoRA on all linear layers, the memory of one step for full fine-tuning,
//! LoRA and QLoRA, and the smallest GPU preset each regime fits on (by the bucket total).

use super::config::{ChartKeys, MemoryKeys, RegimeEntry, build_regimes, labelled_comparison};
use super::format::percent;
use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::memory::reserved::peak_budget;
use ftbudget_core::{CudaOverhead, FitMargin};
use ftbudget_report::chart::{Segment, StackedBars, stacked_bars};
use ftbudget_report::template::Values;
use ftbudget_report::{Comparison, group_digits, units};
use ftbudget_sweep::gpu::GPU_PRESETS;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// Preset names or config paths, one per row.
    models: Vec<String>,
    /// The regimes compared; the first is the baseline (full fine-tuning), the second the LoRA
    /// whose trainable fraction is shown.
    regimes: Vec<RegimeEntry>,
    memory: MemoryKeys,
    table: String,
    /// The models drawn in the chart (a readable subset of `models`).
    chart_models: Vec<String>,
    chart: ChartKeys,
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    if config.regimes.len() < 2 {
        return Err(exp.key_error(
            "regimes",
            "at least full fine-tuning and one LoRA are needed",
        ));
    }
    let registry = ftbudget_roster::registry()?;
    let regimes = build_regimes(exp, &registry, &config.regimes)?;
    let settings = config.memory.settings(exp)?;
    let mut rows = Vec::new();
    for (i, name) in config.models.iter().enumerate() {
        let key = format!("models[{i}]");
        let loaded = ftbudget_models::load_model(name).map_err(|e| exp.key_error(&key, e))?;
        let mut model_settings = settings.clone();
        // Models with a shorter learned position table run at its length (as the CLI does).
        if let Some(limit) = loaded.shape.position_limit() {
            model_settings.workload.seq = model_settings.workload.seq.min(limit);
        }
        let cmp = labelled_comparison(
            exp,
            &key,
            &loaded.shape,
            &regimes,
            &config.regimes,
            &model_settings,
        )?;
        rows.push(cmp);
    }
    let table = zoo_table(&config, &rows);
    let mut charted = Vec::new();
    for (i, name) in config.chart_models.iter().enumerate() {
        let row = config
            .models
            .iter()
            .position(|m| m == name)
            .ok_or_else(|| exp.key_error(&format!("chart_models[{i}]"), "not in `models`"))?;
        charted.push(rows[row].clone());
    }
    let chart = stacked_bars(&StackedBars {
        title: config.chart.title.clone(),
        categories: charted.iter().map(|c| c.model.name.clone()).collect(),
        segments: lora_segments(&charted),
        y_label: "LoRA memory per GPU (GiB)".into(),
        size: config.chart.size(),
    })
    .map_err(|e| exp.key_error("chart", e))?;
    let mut values = Values::new();
    values
        .set("table", table.trim_end())
        .set("chart_file", config.chart.file.clone())
        .set("settings", config.memory.markdown_list())
        .set("regimes", super::config::regime_list(&config.regimes))
        .set("models", rows.len().to_string())
        .set("gpus", gpu_list());
    fill_findings(&mut values, &config, &rows);
    let report = exp.render_report(&values)?;
    Ok(vec![
        OutputFile::text(&config.table, table),
        OutputFile::chart(&config.chart, chart),
        report,
    ])
}

/// The smallest GPU preset a step of peak `peak_bytes` fits on ([`fits`]).
fn smallest_gpu(peak_bytes: u64) -> String {
    let mut presets: Vec<_> = GPU_PRESETS.iter().collect();
    presets.sort_by_key(|p| p.bytes());
    presets
        .iter()
        .find(|p| fits(peak_bytes, p.bytes()))
        .map_or_else(|| "none (shard it)".to_string(), |p| p.name.to_string())
}

fn gpu_list() -> String {
    let mut presets: Vec<_> = GPU_PRESETS.iter().collect();
    presets.sort_by_key(|p| p.bytes());
    presets
        .iter()
        .map(|p| format!("{} ({})", p.name, units::binary(p.bytes())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn zoo_table(config: &Config, rows: &[Comparison]) -> String {
    let mut out = String::from("| Model | Family | Params | ");
    out.push_str(&format!("{} trainable |", config.regimes[1].label));
    for r in &config.regimes {
        out.push_str(&format!(" {} total | peak | fits on |", r.label));
    }
    out.push_str("\n|---|---|---:|---:|");
    for _ in &config.regimes {
        out.push_str("---:|---:|---|");
    }
    out.push('\n');
    for cmp in rows {
        let lora = &cmp.rows[1];
        out.push_str(&format!(
            "| {} | {} | {} | {:.3}% |",
            cmp.model.name,
            cmp.model.family,
            group_digits(cmp.model.total_params),
            percent(lora.trainable_params, lora.all_params),
        ));
        for row in &cmp.rows {
            out.push_str(&format!(
                " {} | {} | {} |",
                units::binary(row.bytes.total),
                units::binary(row.peak.bytes),
                smallest_gpu(row.peak.bytes)
            ));
        }
        out.push('\n');
    }
    out
}

fn lora_segments(rows: &[Comparison]) -> Vec<Segment> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let bucket = |name: &str, f: fn(&ftbudget_report::Bytes) -> u64| Segment {
        name: name.into(),
        values: rows.iter().map(|c| gib(f(&c.rows[1].bytes))).collect(),
    };
    vec![
        bucket("Weights", |b| b.weights),
        bucket("Gradients", |b| b.gradients),
        bucket("Optimizer", |b| b.optimizer),
        bucket("Activations", |b| b.activations + b.weight_casts),
    ]
}

/// Whether a step of peak `peak_bytes` fits on a card of `capacity` bytes, by `fit`'s rule: the
/// peak's reserved estimate (the default CUDA context, 2 MiB segments) plus the default margin
/// within the card's memory.
fn fits(peak_bytes: u64, capacity: u64) -> bool {
    let margin = FitMargin::DEFAULT.bytes_of(capacity);
    peak_bytes <= peak_budget(capacity, margin, &CudaOverhead::default())
}

/// Sentences computed from the rows: how many fit on a 24 GiB card per regime, and the largest
/// and smallest trainable fractions.
fn fill_findings(values: &mut Values, config: &Config, rows: &[Comparison]) {
    let small = GPU_PRESETS
        .iter()
        .map(|p| p.bytes())
        .filter(|&b| b >= 20 << 30)
        .min()
        .unwrap_or(u64::MAX);
    let mut fits_small = Vec::new();
    for (i, entry) in config.regimes.iter().enumerate() {
        let n = rows
            .iter()
            .filter(|c| fits(c.rows[i].peak.bytes, small))
            .count();
        fits_small.push(format!(
            "{} of {} models with {}",
            n,
            rows.len(),
            entry.label
        ));
    }
    let fraction = |c: &Comparison| percent(c.rows[1].trainable_params, c.rows[1].all_params);
    let max = rows
        .iter()
        .max_by(|a, b| fraction(a).total_cmp(&fraction(b)));
    let min = rows
        .iter()
        .min_by(|a, b| fraction(a).total_cmp(&fraction(b)));
    values.set("fits_smallest", fits_small.join(", "));
    values.set("smallest_gpu", units::binary(small));
    if let (Some(max), Some(min)) = (max, min) {
        values.set(
            "fraction_range",
            format!(
                "from {:.3}% ({}) to {:.3}% ({})",
                fraction(min),
                min.model.name,
                fraction(max),
                max.model.name
            ),
        );
    }
}

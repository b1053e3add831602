//! Kind `peak-memory` (experiment 33): ftbudget's step timeline against the peaks PyTorch's
//! `MemTracker` measured over two Trainer-like steps (`fixtures/memory/measured_peak.json` and
//! QLoRA's `measured_peak_qlora.json`), with
//! an error table per family, regime and checkpointing, a predicted-versus-measured scatter, and,
//! on a published model, the bucket sum beside the peak per regime with the peak's phase and the
//! settings that lower it (chunked or fused loss, optimizer in the backward, activation
//! offloading).

use super::config::ChartKeys;
use super::format::signed_percent;
use super::{Experiment, OutputFile, peak_reserved};
use anyhow::Result;
use ftbudget_core::{LossKind, MemoryEstimate, MemorySettings, estimate_memory};
use ftbudget_measurements::peak::{PeakRecord, category_misses, parse_peak_records, predict_peak};
use ftbudget_report::chart::{Legend, Scatter, Series, scatter};
use ftbudget_report::template::Values;
use ftbudget_report::units;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// The peak record files (`tools/measure-peak`), relative to the workspace root.
    fixtures: Vec<String>,
    /// The bound the report counts steps against (percent, either sign).
    error_bound_percent: f64,
    table: String,
    /// A published model for the bucket-versus-peak table, at `batch` x `seq`.
    model: String,
    batch: u64,
    seq: u64,
    regimes: Vec<String>,
    chart: ChartKeys,
    /// Peaks a project published, set against ftbudget's (an outside check).
    published: super::peak_published::Published,
    /// The step timeline chart of the published model (`peak_reserved.rs`).
    timeline: peak_reserved::TimelineKeys,
    /// The reserved estimate beside the peak (`peak_reserved.rs`).
    reserved: peak_reserved::ReservedKeys,
}

/// One measured step with its prediction.
struct Step {
    record: usize,
    step: &'static str,
    measured: u64,
    predicted: u64,
    measured_phase: String,
    predicted_phase: &'static str,
    /// Every category holding more than 5% of the measured peak is within 10% of it.
    categories_match: bool,
}

impl Step {
    fn error(&self) -> f64 {
        (self.predicted as f64 - self.measured as f64) / self.measured as f64
    }
}

fn steps(records: &[PeakRecord]) -> Result<Vec<Step>> {
    let mut out = Vec::with_capacity(2 * records.len());
    for (i, r) in records.iter().enumerate() {
        let e = predict_peak(r)?;
        for (step, measured, predicted) in [
            ("first", &r.peak.step1, e.first),
            ("steady", &r.peak.step2, e.steady),
        ] {
            out.push(Step {
                record: i,
                step,
                measured: measured.peak_bytes,
                predicted: predicted.bytes,
                measured_phase: measured.phase.clone(),
                predicted_phase: predicted.phase.name(),
                categories_match: category_misses(&predicted.by_category, measured).is_empty(),
            });
        }
    }
    Ok(out)
}

fn group_of(r: &PeakRecord) -> (String, String, &'static str) {
    (
        r.shape.family.clone(),
        r.regime.split('-').next().unwrap_or("").to_string(),
        if r.gradient_checkpointing {
            "on"
        } else {
            "off"
        },
    )
}

fn error_table(records: &[PeakRecord], steps: &[Step], bound: f64) -> String {
    let mut groups: BTreeMap<_, Vec<&Step>> = BTreeMap::new();
    for s in steps {
        groups
            .entry(group_of(&records[s.record]))
            .or_default()
            .push(s);
    }
    let mut out = String::from(
        "| Family | Regime | Checkpointing | Steps | Within bound | Mean abs error | Worst error | Phase as measured |\n|---|---|---|---:|---:|---:|---:|---:|\n",
    );
    for ((family, regime, ckpt), group) in &groups {
        let n = group.len();
        let within = group.iter().filter(|s| s.error().abs() <= bound).count();
        let mean = group.iter().map(|s| s.error().abs()).sum::<f64>() / n as f64;
        let worst = group
            .iter()
            .map(|s| s.error())
            .fold(0.0f64, |w, e| if e.abs() > w.abs() { e } else { w });
        let phases = group
            .iter()
            .filter(|s| s.predicted_phase == s.measured_phase)
            .count();
        let _ = writeln!(
            out,
            "| {family} | {regime} | {ckpt} | {n} | {within} | {:.2}% | {} | {phases} |",
            100.0 * mean,
            signed_percent(worst)
        );
    }
    out
}

/// Bucket sum and peak per regime on the published model, with each setting that lowers it.
/// A regime's label, bucket total and peak on the published model.
type BucketRow = (String, u64, u64);

fn bucket_table(exp: &Experiment, config: &Config) -> Result<(String, Vec<BucketRow>)> {
    let model = ftbudget_models::load(&config.model).map_err(|e| exp.key_error("model", e))?;
    let registry = ftbudget_roster::registry()?;
    let mut settings = MemorySettings::pytorch();
    settings.workload.batch = config.batch;
    settings.workload.seq = config.seq;
    settings.validate().map_err(|e| exp.key_error("batch", e))?;
    let mut out = String::from(
        "| Regime | Bucket total | Peak | Peak − total | Phase, step | Chunked loss | Fused loss | Optimizer in backward | Activation offload (host) |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    let mut rows = Vec::new();
    for (i, spec) in config.regimes.iter().enumerate() {
        let key = format!("regimes[{i}]");
        let regime = registry.build(spec).map_err(|e| exp.key_error(&key, e))?;
        let plan = regime.plan(&model).map_err(|e| exp.key_error(&key, e))?;
        let estimate = |s: &MemorySettings| -> Result<MemoryEstimate> {
            estimate_memory(&model, &plan, s).map_err(|e| exp.key_error(&key, e))
        };
        let plain = estimate(&settings)?;
        let with = |f: &dyn Fn(&mut MemorySettings)| -> Result<MemoryEstimate> {
            let mut s = settings.clone();
            f(&mut s);
            estimate(&s)
        };
        let chunked = with(&|s| s.step.loss = LossKind::Chunked)?;
        let fused = with(&|s| s.step.loss = LossKind::Fused)?;
        let in_backward = with(&|s| s.step.optimizer_in_backward = true)?;
        let offload = with(&|s| s.step.activation_offload = true)?;
        let p = plain.peak;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}, {} | {} | {} | {} | {} ({}) |",
            regime.label(),
            units::binary(plain.total),
            units::binary(p.bytes),
            signed_binary(i128::from(p.bytes) - i128::from(plain.total)),
            p.phase,
            p.step.name(),
            units::binary(chunked.peak.bytes),
            units::binary(fused.peak.bytes),
            units::binary(in_backward.peak.bytes),
            units::binary(offload.peak.bytes),
            units::binary(offload.peak.host_offload_bytes),
        );
        rows.push((regime.label(), plain.total, p.bytes));
    }
    Ok((out, rows))
}

fn signed_binary(bytes: i128) -> String {
    let magnitude = u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX);
    let sign = if bytes < 0 { "−" } else { "+" };
    format!("{sign}{}", units::binary(magnitude))
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    if !(config.error_bound_percent > 0.0 && config.error_bound_percent < 100.0) {
        return Err(exp.key_error("error_bound_percent", "not in (0, 100)"));
    }
    let mut records = Vec::new();
    for path in &config.fixtures {
        let text = fs::read_to_string(exp.root.join(path))
            .map_err(|e| exp.key_error("fixtures", format!("{path}: {e}")))?;
        let file = parse_peak_records(&text)
            .map_err(|e| exp.key_error("fixtures", format!("{path}: {e}")))?;
        if file.is_empty() {
            return Err(exp.key_error("fixtures", format!("{path}: no records")));
        }
        records.extend(file);
    }
    if records.is_empty() {
        return Err(exp.key_error("fixtures", "no files"));
    }
    let steps = steps(&records).map_err(|e| exp.key_error("fixtures", e))?;
    let bound = config.error_bound_percent / 100.0;
    let table = error_table(&records, &steps, bound);

    let mut by_family: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in &steps {
        by_family
            .entry(records[s.record].shape.family.clone())
            .or_default()
            .push((
                s.measured as f64 / 1048576.0,
                s.predicted as f64 / 1048576.0,
            ));
    }
    let series = by_family
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    let chart = scatter(&Scatter {
        title: config.chart.title.clone(),
        x_label: "measured peak (MiB, MemTracker)".into(),
        y_label: "predicted peak (MiB)".into(),
        series,
        identity_line: true,
        legend: Legend::UpperLeft,
        size: config.chart.size(),
    })
    .map_err(|e| exp.key_error("chart", e))?;

    let within = steps.iter().filter(|s| s.error().abs() <= bound).count();
    let within_10 = steps.iter().filter(|s| s.error().abs() <= 0.10).count();
    let phases = steps
        .iter()
        .filter(|s| s.predicted_phase == s.measured_phase)
        .count();
    let worst = steps
        .iter()
        .max_by(|a, b| a.error().abs().total_cmp(&b.error().abs()))
        .expect("records give steps");
    let dense: Vec<&Step> = steps
        .iter()
        .filter(|s| !records[s.record].shape.family.ends_with("_moe"))
        .collect();
    let dense_worst = dense
        .iter()
        .map(|s| s.error())
        .fold(0.0f64, |w, e| if e.abs() > w.abs() { e } else { w });
    let (buckets, rows) = bucket_table(exp, &config)?;
    let (timeline_file, reserved_table, reserved_prose) = reserved_and_timeline(exp, &config)?;
    let prose = rows
        .iter()
        .map(|(label, total, peak)| {
            let diff = i128::from(*peak) - i128::from(*total);
            format!(
                "- {label}: the peak is {} the bucket total ({} against {}).",
                if diff >= 0 { "above" } else { "below" },
                signed_binary(diff),
                units::binary(*total)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");

    let published = super::peak_published::check(exp, &config.published)?;
    let mut values = Values::new();
    values
        .set("published_source", config.published.source.clone())
        .set("published_metric", config.published.metric.clone())
        .set("published_model", config.published.model.clone())
        .set("published_batch", config.published.batch.to_string())
        .set("published_seq", config.published.seq.to_string())
        .set("published_precision", config.published.precision.clone())
        .set(
            "published_table",
            super::peak_published::table(&config.published, &published)
                .trim_end()
                .to_string(),
        )
        .set("published_prose", super::peak_published::prose(&published))
        .set("fixtures", config.fixtures.join("`, `"))
        .set("records", records.len().to_string())
        .set("steps", steps.len().to_string())
        .set("bound", format!("{}", config.error_bound_percent))
        .set("within_bound", within.to_string())
        .set("within_10", within_10.to_string())
        .set("phases_match", phases.to_string())
        .set(
            "categories_match",
            steps
                .iter()
                .filter(|s| s.categories_match)
                .count()
                .to_string(),
        )
        .set("dense_steps", dense.len().to_string())
        .set(
            "dense_within_bound",
            dense
                .iter()
                .filter(|s| s.error().abs() <= bound)
                .count()
                .to_string(),
        )
        .set("dense_worst", signed_percent(dense_worst))
        .set("worst_error", signed_percent(worst.error()))
        .set(
            "worst_id",
            format!("{} ({} step)", records[worst.record].id, worst.step),
        )
        .set("error_table", table.trim_end())
        .set("model", config.model.clone())
        .set("batch", config.batch.to_string())
        .set("seq", config.seq.to_string())
        .set("bucket_table", buckets.trim_end())
        .set("bucket_prose", prose)
        .set("chart", config.chart.file.clone())
        .set("table_file", config.table.clone())
        .set("timeline_chart", timeline_file.name.clone())
        .set("timeline_regimes", config.timeline.regimes.join(", "))
        .set("reserved_table", reserved_table.trim_end())
        .set("reserved_prose", reserved_prose);
    Ok(vec![
        OutputFile::text(&config.table, table),
        OutputFile::chart(&config.chart, chart),
        timeline_file,
        exp.render_report(&values)?,
    ])
}

/// The published model's timeline chart and reserved table (`peak_reserved.rs`), under the
/// bucket table's settings.
fn reserved_and_timeline(
    exp: &Experiment,
    config: &Config,
) -> Result<(OutputFile, String, String)> {
    let model = ftbudget_models::load(&config.model).map_err(|e| exp.key_error("model", e))?;
    let mut settings = MemorySettings::pytorch();
    settings.workload.batch = config.batch;
    settings.workload.seq = config.seq;
    settings.validate().map_err(|e| exp.key_error("batch", e))?;
    let chart = peak_reserved::timeline_chart(exp, &model, &settings, &config.timeline)?;
    let (table, prose) =
        peak_reserved::reserved_section(exp, &model, &settings, &config.regimes, &config.reserved)?;
    Ok((chart, table, prose))
}

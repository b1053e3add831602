//! Kind `memory-validation` (experiment 30): ftbudget's memory estimate beside PyTorch's measured
//! training step for every record of the committed measurement fixtures (`fixtures/memory/`,
//! parsed and mapped to ftbudget's inputs by `ftbudget-measurements`), in two splits: the
//! records the activation model was fitted to or corrected on, and the held-out records measured
//! after it was written. Each split has its activation error per family, attention
//! implementation, dtype mode and checkpointing, exact-match counts for weights, gradients,
//! optimizer state and autocast weight casts, and its worst errors; one predicted-versus-measured
//! scatter shows both.

use super::config::ChartKeys;
use super::format::{model_summary, signed_percent, sorted_points};
use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::MemoryEstimate;
use ftbudget_measurements::{
    MemoryRecord, activation_error, measured_activations, measured_weight_casts, parse_records,
    predict,
};
use ftbudget_report::chart::{Legend, Scatter, Series, scatter};
use ftbudget_report::template::{Values, bullet_list};
use ftbudget_report::units;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// Measurement files (the `fixtures/memory` record format, relative to the workspace root)
    /// the activation model was fitted to or corrected on.
    fixtures: Vec<String>,
    /// Measurement files made after the model was written and never used to tune it.
    held_out: Vec<String>,
    /// The activation error (percent, either sign) the report counts records against.
    error_bound_percent: f64,
    /// The error tables' file names.
    table: String,
    held_out_table: String,
    chart: ChartKeys,
}

/// One record with ftbudget's prediction for it.
struct Evaluated {
    record: MemoryRecord,
    estimate: MemoryEstimate,
    /// `(predicted - measured) / measured` activation bytes (weight casts excluded).
    error: f64,
}

impl Evaluated {
    fn weights_exact(&self) -> bool {
        self.estimate.weights == self.record.params.total_bytes
    }

    fn gradients_exact(&self) -> bool {
        self.estimate.gradients == self.record.grads.bytes
    }

    /// AdamW's moment tensors and its per-tensor step counters.
    fn optimizer_exact(&self) -> bool {
        self.estimate.detail.optimizer_states == self.record.optimizer.state_bytes_excl_step
            && self.estimate.detail.step_counters == self.record.optimizer.step_bytes
    }

    fn weight_casts_exact(&self) -> bool {
        self.estimate.weight_casts == measured_weight_casts(&self.record)
    }

    /// `(predicted - measured) / measured` weight-cast bytes; 0 when both are 0.
    fn weight_cast_error(&self) -> f64 {
        let measured = measured_weight_casts(&self.record);
        if self.estimate.weight_casts == measured {
            return 0.0;
        }
        (self.estimate.weight_casts as f64 - measured as f64) / measured as f64
    }

    fn measured_activations(&self) -> u64 {
        measured_activations(&self.record)
    }
}

/// `(family, attention implementation, dtype mode, checkpointing)`.
type GroupKey = (String, String, String, &'static str);

/// Aggregates over the records of one group (or one family, or a whole split).
#[derive(Debug, Default)]
struct Group {
    records: usize,
    /// The activation error of largest magnitude, signed, and its record index.
    worst: Option<(f64, usize)>,
    /// The same for weight casts, among the records whose casts are not exact.
    worst_weight_casts: Option<(f64, usize)>,
    error_sum: f64,
    abs_error_sum: f64,
    weights: usize,
    gradients: usize,
    optimizer: usize,
    weight_casts: usize,
}

fn keep_worst(slot: &mut Option<(f64, usize)>, error: f64, index: usize) {
    if slot.is_none_or(|(w, _)| error.abs() > w.abs()) {
        *slot = Some((error, index));
    }
}

impl Group {
    fn add(&mut self, index: usize, e: &Evaluated) {
        self.records += 1;
        keep_worst(&mut self.worst, e.error, index);
        if !e.weight_casts_exact() {
            keep_worst(&mut self.worst_weight_casts, e.weight_cast_error(), index);
        }
        self.error_sum += e.error;
        self.abs_error_sum += e.error.abs();
        self.weights += usize::from(e.weights_exact());
        self.gradients += usize::from(e.gradients_exact());
        self.optimizer += usize::from(e.optimizer_exact());
        self.weight_casts += usize::from(e.weight_casts_exact());
    }

    fn worst_error(&self) -> f64 {
        self.worst.map_or(0.0, |(w, _)| w)
    }

    fn mean_error(&self) -> f64 {
        self.error_sum / self.records as f64
    }

    fn mean_abs_error(&self) -> f64 {
        self.abs_error_sum / self.records as f64
    }
}

fn evaluate(records: Vec<MemoryRecord>) -> Result<Vec<Evaluated>> {
    records
        .into_iter()
        .map(|record| {
            let estimate = predict(&record)?;
            let error = activation_error(&record, &estimate);
            Ok(Evaluated {
                record,
                estimate,
                error,
            })
        })
        .collect()
}

fn group_key(e: &Evaluated) -> GroupKey {
    (
        e.record.shape.family.clone(),
        e.record.attn_implementation_used.clone(),
        e.record.dtype_mode.clone(),
        if e.record.gradient_checkpointing {
            "full"
        } else {
            "none"
        },
    )
}

/// The records of one split (fitted or held out), each with ftbudget's prediction.
struct Split {
    /// Each file of the split and its record count.
    files: Vec<(String, usize)>,
    evaluated: Vec<Evaluated>,
}

impl Split {
    /// Read and evaluate the files of config key `key`.
    fn read(exp: &Experiment, key: &str, paths: &[String]) -> Result<Split> {
        if paths.is_empty() {
            return Err(exp.key_error(key, "at least one measurement file is needed"));
        }
        let mut files = Vec::new();
        let mut records = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let key = format!("{key}[{i}]");
            let text = fs::read_to_string(exp.root.join(path))
                .map_err(|e| exp.key_error(&key, format!("{path}: {e}")))?;
            let parsed =
                parse_records(&text).map_err(|e| exp.key_error(&key, format!("{path}: {e}")))?;
            if parsed.is_empty() {
                return Err(exp.key_error(&key, format!("{path}: no records")));
            }
            files.push((path.clone(), parsed.len()));
            records.extend(parsed);
        }
        let evaluated = evaluate(records).map_err(|e| exp.key_error(key, e))?;
        Ok(Split { files, evaluated })
    }

    fn grouped<K: Ord>(&self, key: impl Fn(&Evaluated) -> K) -> BTreeMap<K, Group> {
        let mut out: BTreeMap<K, Group> = BTreeMap::new();
        for (i, e) in self.evaluated.iter().enumerate() {
            out.entry(key(e)).or_default().add(i, e);
        }
        out
    }

    fn groups(&self) -> BTreeMap<GroupKey, Group> {
        self.grouped(group_key)
    }

    fn overall(&self) -> Group {
        self.grouped(|_| ()).remove(&()).unwrap_or_default()
    }

    /// The split's values for the template, each name prefixed with `prefix`.
    fn fill(&self, values: &mut Values, prefix: &str, bound: f64) {
        let evaluated = &self.evaluated;
        let overall = self.overall();
        let (worst, worst_index) = overall.worst.expect("a split has records");
        let within = evaluated.iter().filter(|e| e.error.abs() <= bound).count();
        let fixtures = bullet_list(
            self.files
                .iter()
                .map(|(path, n)| format!("`{path}`: {n} records")),
        );
        let casts = match overall.worst_weight_casts {
            None => "every record's weight casts are exact".to_string(),
            Some((w, i)) => format!(
                "the worst weight-cast error is {} (`{}`)",
                signed_percent(w),
                evaluated[i].record.id
            ),
        };
        let families = self.grouped(|e| e.record.shape.family.clone());
        values
            .prefixed(prefix)
            .set("records", evaluated.len().to_string())
            .set("fixtures", fixtures)
            .set("models", model_list(evaluated))
            .set("regimes", distinct(evaluated, |r| r.regime.clone()))
            .set("dtype_modes", distinct(evaluated, |r| r.dtype_mode.clone()))
            .set(
                "attention_impls",
                distinct(evaluated, |r| r.attn_implementation_used.clone()),
            )
            .set(
                "workloads",
                distinct(evaluated, |r| format!("{}x{}", r.batch, r.seq)),
            )
            .set(
                "dropouts",
                distinct(evaluated, |r| format!("{}", r.dropout)),
            )
            .set("error_table", error_table(&self.groups()).trim_end())
            .set("worst_per_family", worst_list(evaluated, &families))
            .set("worst_error", signed_percent(worst))
            .set("worst_id", evaluated[worst_index].record.id.clone())
            .set(
                "mean_abs_error",
                format!("{:.2}%", 100.0 * overall.mean_abs_error()),
            )
            .set("within_bound", within.to_string())
            .set("weights_exact", overall.weights.to_string())
            .set("gradients_exact", overall.gradients.to_string())
            .set("optimizer_exact", overall.optimizer.to_string())
            .set("weight_casts_exact", overall.weight_casts.to_string())
            .set("weight_casts_worst", casts);
    }
}

/// The fitted and held-out splits of an experiment, and how many held-out records were left out
/// because they repeat a fitted configuration (the same record id: measured again, not held
/// out). No file may be in both.
fn read_splits(exp: &Experiment, config: &Config) -> Result<(Split, Split, usize)> {
    if let Some(both) = config.held_out.iter().find(|p| config.fixtures.contains(p)) {
        return Err(exp.key_error("held_out", format!("{both} is also listed in `fixtures`")));
    }
    let fitted = Split::read(exp, "fixtures", &config.fixtures)?;
    let mut held_out = Split::read(exp, "held_out", &config.held_out)?;
    let fitted_ids: BTreeSet<&str> = fitted
        .evaluated
        .iter()
        .map(|e| e.record.id.as_str())
        .collect();
    let before = held_out.evaluated.len();
    held_out
        .evaluated
        .retain(|e| !fitted_ids.contains(e.record.id.as_str()));
    let repeats = before - held_out.evaluated.len();
    if held_out.evaluated.is_empty() {
        return Err(exp.key_error("held_out", "every record repeats a fitted configuration"));
    }
    Ok((fitted, held_out, repeats))
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    if !(config.error_bound_percent > 0.0 && config.error_bound_percent < 100.0) {
        return Err(exp.key_error(
            "error_bound_percent",
            format!("{} is not in (0, 100)", config.error_bound_percent),
        ));
    }
    let (fitted, held_out, repeats) = read_splits(exp, &config)?;
    let table = error_table(&fitted.groups());
    let held_out_table = error_table(&held_out.groups());
    let mut series = family_series(&fitted.evaluated, "");
    series.extend(family_series(&held_out.evaluated, ", held out"));
    let chart = scatter(&Scatter {
        title: config.chart.title.clone(),
        x_label: "measured activation bytes (MiB)".into(),
        y_label: "predicted activation bytes (MiB)".into(),
        series,
        identity_line: true,
        legend: Legend::UpperLeft,
        size: config.chart.size(),
    })
    .map_err(|e| exp.key_error("chart", e))?;

    let bound = config.error_bound_percent / 100.0;
    let mut values = Values::new();
    fitted.fill(&mut values, "fitted_", bound);
    held_out.fill(&mut values, "held_out_", bound);
    values
        .set("chart_file", config.chart.file.clone())
        .set("held_out_table_file", config.held_out_table.clone())
        .set("held_out_repeats", repeats.to_string())
        .set("bound", format!("{}%", config.error_bound_percent));

    let report = exp.render_report(&values)?;
    Ok(vec![
        OutputFile::text(&config.table, table),
        OutputFile::text(&config.held_out_table, held_out_table),
        OutputFile::chart(&config.chart, chart),
        report,
    ])
}

fn exact(count: usize, records: usize) -> String {
    format!("{count}/{records}")
}

fn error_table(groups: &BTreeMap<GroupKey, Group>) -> String {
    let mut out = String::from(
        "| Family | Attention | Dtype mode | Checkpointing | Records | Worst activation error | \
         Mean error | Mean abs. error | Weights exact | Gradients exact | Optimizer state exact \
         (incl. step counters) | Weight casts exact |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for ((family, attention, dtype, checkpointing), g) in groups {
        out.push_str(&format!(
            "| {family} | {attention} | {dtype} | {checkpointing} | {} | {} | {} | {:.2}% | {} \
             | {} | {} | {} |\n",
            g.records,
            signed_percent(g.worst_error()),
            signed_percent(g.mean_error()),
            100.0 * g.mean_abs_error(),
            exact(g.weights, g.records),
            exact(g.gradients, g.records),
            exact(g.optimizer, g.records),
            exact(g.weight_casts, g.records),
        ));
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One series per family, named `{family}{suffix}`.
fn family_series(evaluated: &[Evaluated], suffix: &str) -> Vec<Series> {
    let mut by_family: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for e in evaluated {
        by_family
            .entry(e.record.shape.family.as_str())
            .or_default()
            .push((mib(e.measured_activations()), mib(e.estimate.activations)));
    }
    by_family
        .into_iter()
        .map(|(family, points)| Series {
            name: format!("{family}{suffix}"),
            points: sorted_points(points),
        })
        .collect()
}

/// Distinct values of a record field, in order, as inline code.
fn distinct(evaluated: &[Evaluated], field: impl Fn(&MemoryRecord) -> String) -> String {
    let set: BTreeSet<String> = evaluated.iter().map(|e| field(&e.record)).collect();
    set.iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn model_list(evaluated: &[Evaluated]) -> String {
    let mut models: BTreeMap<&str, (&MemoryRecord, usize)> = BTreeMap::new();
    for e in evaluated {
        models
            .entry(e.record.model.as_str())
            .or_insert((&e.record, 0))
            .1 += 1;
    }
    bullet_list(models.into_values().map(|(r, count)| {
        let summary = ftbudget_measurements::shape(r)
            .map(|shape| model_summary(&shape))
            .unwrap_or_else(|e| e.to_string());
        format!("{summary}; {count} records.")
    }))
}

fn worst_list(evaluated: &[Evaluated], families: &BTreeMap<String, Group>) -> String {
    bullet_list(families.iter().map(|(family, g)| {
        let (worst, index) = g.worst.expect("a family has records");
        let e = &evaluated[index];
        format!(
            "`{family}` ({} records): worst {} on `{}` (predicted {}, measured {}); mean absolute \
             error {:.2}%.",
            g.records,
            signed_percent(worst),
            e.record.id,
            units::binary(e.estimate.activations),
            units::binary(e.measured_activations()),
            100.0 * g.mean_abs_error(),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn experiment() -> Experiment {
        let root = crate::report::workspace_root();
        Experiment::read(&root, Path::new("experiments/30-memory-validation")).unwrap()
    }

    /// The held-out split is the held-out fixture alone (measured after the checkpointing and
    /// dropout terms were written, fixtures/memory/README.md) less its 72 records without
    /// checkpointing or dropout, which repeat configurations of the fitted files (3 models x 3
    /// regimes x 2 attention x 2 precisions x 2 shapes): 216 records, reported apart from the
    /// 648 the model was fitted to or corrected on.
    #[test]
    fn held_out_records_are_reported_apart() {
        let exp = experiment();
        let config: Config = exp.parse().unwrap();
        assert_eq!(
            config.held_out,
            ["fixtures/memory/measured_memory_ckpt_dropout_heldout.json"]
        );
        let (fitted, held_out, repeats) = read_splits(&exp, &config).unwrap();
        assert_eq!(fitted.evaluated.len(), 180 + 180 + 288);
        assert_eq!(held_out.files, [(config.held_out[0].clone(), 288)]);
        assert_eq!(repeats, 72);
        assert_eq!(held_out.evaluated.len(), 216);
        assert!(
            held_out
                .evaluated
                .iter()
                .all(|e| e.record.gradient_checkpointing || e.record.dropout > 0.0)
        );
        // qwen2, llama, gpt2 x eager, sdpa x fp32, autocast x checkpointing off and on.
        assert_eq!(held_out.groups().len(), 24);
    }

    #[test]
    fn a_file_in_both_splits_is_an_error() {
        let exp = experiment();
        let mut config: Config = exp.parse().unwrap();
        config.held_out.push(config.fixtures[0].clone());
        let err = read_splits(&exp, &config).err().unwrap().to_string();
        assert_eq!(
            err,
            "experiments/30-memory-validation/experiment.toml: held_out: \
             fixtures/memory/measured_memory.json is also listed in `fixtures`"
        );
    }
}

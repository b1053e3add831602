//! Kind `peft-methods` (experiment 35): every PEFT method of issue 14 next to LoRA and full
//! fine-tuning on two model families: trainable parameters (count and share of peft's all
//! params) and the memory of one training step, by bucket, with a stacked-bar chart of the
//! first model's memory.

use super::config::{ChartKeys, MemoryKeys, RegimeEntry, build_regimes, labelled_comparison};
use super::format::{model_summary, percent};
use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::ModelShape;
use ftbudget_report::chart::{Segment, StackedBars, stacked_bars};
use ftbudget_report::{Comparison, group_digits, units};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// Preset names or config paths; the chart shows the first.
    models: Vec<String>,
    regimes: Vec<RegimeEntry>,
    memory: MemoryKeys,
    tables: TableFiles,
    chart: ChartKeys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFiles {
    params: String,
    memory: String,
}

const GIB: f64 = (1u64 << 30) as f64;

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    if config.models.is_empty() {
        return Err(exp.key_error("models", "at least one model is needed"));
    }
    let registry = ftbudget_roster::registry()?;
    let regimes = build_regimes(exp, &registry, &config.regimes)?;
    let settings = config.memory.settings(exp)?;
    let mut evaluated: Vec<(ModelShape, Comparison)> = Vec::new();
    for (i, name) in config.models.iter().enumerate() {
        let key = format!("models[{i}]");
        let model = ftbudget_models::load(name).map_err(|e| exp.key_error(&key, e))?;
        let cmp = labelled_comparison(exp, &key, &model, &regimes, &config.regimes, &settings)?;
        evaluated.push((model, cmp));
    }
    let params = params_table(&config, &evaluated);
    let memory = memory_table(&evaluated);
    let (first_model, first) = &evaluated[0];
    let bucket = |f: fn(&ftbudget_report::Bytes) -> u64| Segment {
        name: String::new(),
        values: first
            .rows
            .iter()
            .map(|r| f(&r.bytes) as f64 / GIB)
            .collect(),
    };
    let segments = vec![
        Segment {
            name: "weights".into(),
            ..bucket(|b| b.weights + b.weight_casts)
        },
        Segment {
            name: "gradients".into(),
            ..bucket(|b| b.gradients)
        },
        Segment {
            name: "optimizer".into(),
            ..bucket(|b| b.optimizer)
        },
        Segment {
            name: "activations".into(),
            ..bucket(|b| b.activations)
        },
    ];
    let chart = stacked_bars(&StackedBars {
        title: format!("{} ({})", config.chart.title, first_model.name),
        categories: first.rows.iter().map(|r| r.label.clone()).collect(),
        segments,
        y_label: "Memory of one training step (GiB)".into(),
        size: config.chart.size(),
    })
    .map_err(|e| exp.key_error("chart", e))?;

    let mut values = ftbudget_report::template::Values::new();
    let models: Vec<String> = evaluated.iter().map(|(m, _)| model_summary(m)).collect();
    values
        .set("params_table", params.trim_end())
        .set("memory_table", memory.trim_end())
        .set("chart_file", config.chart.file.clone())
        .set("models", ftbudget_report::template::bullet_list(models))
        .set("regimes", super::config::regime_list(&config.regimes))
        .set("settings", config.memory.markdown_list());
    fill_discussion(&mut values, &evaluated);
    let report = exp.render_report(&values)?;
    Ok(vec![
        OutputFile::text(&config.tables.params, params),
        OutputFile::text(&config.tables.memory, memory),
        OutputFile::chart(&config.chart, chart),
        report,
    ])
}

fn params_table(config: &Config, evaluated: &[(ModelShape, Comparison)]) -> String {
    let mut out = String::from("| method | spec |");
    for (m, _) in evaluated {
        out.push_str(&format!(" {} trainable | share |", m.name));
    }
    out.push_str("\n|---|---|");
    for _ in evaluated {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for (i, entry) in config.regimes.iter().enumerate() {
        out.push_str(&format!("| {} | `{}` |", entry.label, entry.spec));
        for (_, cmp) in evaluated {
            let row = &cmp.rows[i];
            out.push_str(&format!(
                " {} | {:.4}% |",
                group_digits(row.trainable_params),
                percent(row.trainable_params, row.all_params)
            ));
        }
        out.push('\n');
    }
    out
}

fn memory_table(evaluated: &[(ModelShape, Comparison)]) -> String {
    let mut out = String::new();
    for (model, cmp) in evaluated {
        out.push_str(&format!(
            "**{}**\n\n| method | weights | gradients | optimizer | activations | total | step FLOPs | FLOPs vs full FT |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
            model.name
        ));
        // FLOPs of one step as FlopCounterMode counts them, against the full fine-tuning row.
        let full_ft = cmp
            .rows
            .iter()
            .find(|r| r.regime == "full-ft")
            .map(|r| r.flops.step);
        for row in &cmp.rows {
            let b = &row.bytes;
            let vs_full = full_ft.map_or_else(
                || "-".to_string(),
                |full| format!("{:.3}x", row.flops.step as f64 / full as f64),
            );
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.2} TFLOP | {} |\n",
                row.label,
                units::binary(b.weights + b.weight_casts),
                units::binary(b.gradients),
                units::binary(b.optimizer),
                units::binary(b.activations),
                units::binary(b.total),
                row.flops.step as f64 / 1e12,
                vs_full
            ));
        }
        out.push('\n');
    }
    out
}

/// The figures the discussion quotes: the smallest and largest trainable counts and totals on
/// the first model.
fn fill_discussion(
    values: &mut ftbudget_report::template::Values,
    evaluated: &[(ModelShape, Comparison)],
) {
    let (model, cmp) = &evaluated[0];
    let adapters: Vec<_> = cmp
        .rows
        .iter()
        .filter(|r| r.trainable_params < r.base_params)
        .collect();
    let fewest = adapters.iter().min_by_key(|r| r.trainable_params);
    let most = adapters.iter().max_by_key(|r| r.trainable_params);
    let smallest = adapters.iter().min_by_key(|r| r.bytes.total);
    let largest = adapters.iter().max_by_key(|r| r.bytes.total);
    values.set("first_model", model.name.clone());
    if let (Some(f), Some(m), Some(s), Some(l)) = (fewest, most, smallest, largest) {
        values
            .set("fewest_label", f.label.clone())
            .set("fewest_trainable", group_digits(f.trainable_params))
            .set("most_label", m.label.clone())
            .set("most_trainable", group_digits(m.trainable_params))
            .set("smallest_label", s.label.clone())
            .set("smallest_total", units::binary(s.bytes.total))
            .set("largest_label", l.label.clone())
            .set("largest_total", units::binary(l.bytes.total));
    }
}

//! Kind `production-scale` (experiment 29): the same regimes on several real model shapes, MiniGPT
//! next to LLaMA-class presets, so the MiniGPT-versus-production discussion rests on real shapes:
//! the trainable fraction of each regime at each scale, the square-layer ratio 2r/h at each
//! width, and the memory of one training step per model and regime.

use super::config::{ChartKeys, MemoryKeys, RegimeEntry, build_regimes, labelled_comparison};
use super::format::{model_summary, percent, sorted_points, square_ratio_percent};
use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::{MemorySettings, ModelShape};
use ftbudget_report::chart::{Legend, LineChart, Scale, Series, line_chart};
use ftbudget_report::template::{Values, bullet_list};
use ftbudget_report::{Comparison, group_digits, units};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// Preset names or config paths; the first is the small-scale reference.
    models: Vec<String>,
    /// The LoRA rank the discussion is about; a regime with spec `lora:r=<focus_rank>` must exist.
    focus_rank: u64,
    regimes: Vec<RegimeEntry>,
    memory: MemoryKeys,
    tables: TableFiles,
    chart: ChartKeys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFiles {
    fractions: String,
    memory: String,
}

struct Evaluated {
    model: ModelShape,
    cmp: Comparison,
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    if config.models.len() < 2 {
        return Err(exp.key_error("models", "at least two models are needed"));
    }
    let registry = ftbudget_roster::registry()?;
    let regimes = build_regimes(exp, &registry, &config.regimes)?;
    let settings = config.memory.settings(exp)?;
    let focus_spec = format!("lora:r={}", config.focus_rank);
    let focus = config
        .regimes
        .iter()
        .position(|r| r.spec == focus_spec)
        .ok_or_else(|| exp.key_error("focus_rank", format!("no regime `{focus_spec}` listed")))?;

    let mut evaluated = Vec::new();
    for (i, name) in config.models.iter().enumerate() {
        let model =
            ftbudget_models::load(name).map_err(|e| exp.key_error(&format!("models[{i}]"), e))?;
        let cmp = labelled_comparison(
            exp,
            &format!("models[{i}]"),
            &model,
            &regimes,
            &config.regimes,
            &settings,
        )?;
        evaluated.push(Evaluated { model, cmp });
    }

    let fractions = fractions_table(&config, &evaluated);
    let memory = memory_table(&config, &evaluated);
    let chart = line_chart(&LineChart {
        title: config.chart.title.clone(),
        x_label: "hidden size h (log scale)".into(),
        y_label: "trainable parameters, % of all params (log scale)".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        series: fraction_series(&config, &evaluated),
        reference_lines: Vec::new(),
        legend: Legend::UpperRight,
        size: config.chart.size(),
    })
    .map_err(|e| exp.key_error("chart", e))?;

    let mut values = Values::new();
    values
        .set("fractions_table", fractions.trim_end())
        .set("memory_table", memory.trim_end())
        .set("chart_file", config.chart.file.clone())
        .set("models", model_list(&evaluated))
        .set("regimes", super::config::regime_list(&config.regimes))
        .set("settings", config.memory.markdown_list())
        .set("focus_rank", config.focus_rank.to_string());
    fill_discussion(&mut values, &config, &settings, &evaluated, focus);

    let report = exp.render_report(&values)?;
    Ok(vec![
        OutputFile::text(&config.tables.fractions, fractions),
        OutputFile::text(&config.tables.memory, memory),
        OutputFile::chart(&config.chart, chart),
        report,
    ])
}

fn header(evaluated: &[Evaluated], first: &str) -> String {
    let mut out = format!("| {first} |");
    for e in evaluated {
        out.push_str(&format!(
            " {} (h = {}) |",
            e.model.name, e.model.dims.hidden
        ));
    }
    out.push_str("\n|---|");
    for _ in evaluated {
        out.push_str("---:|");
    }
    out.push('\n');
    out
}

/// One table row: `label`, then one cell per model.
fn table_row(
    out: &mut String,
    label: &str,
    evaluated: &[Evaluated],
    cell: impl Fn(&Evaluated) -> String,
) {
    out.push_str(&format!("| {label} |"));
    for e in evaluated {
        out.push_str(&format!(" {} |", cell(e)));
    }
    out.push('\n');
}

fn fractions_table(config: &Config, evaluated: &[Evaluated]) -> String {
    let mut out = header(evaluated, "Regime");
    for (i, entry) in config.regimes.iter().enumerate() {
        table_row(&mut out, &entry.label, evaluated, |e| {
            let row = &e.cmp.rows[i];
            format!(
                "{} ({:.3}%)",
                group_digits(row.trainable_params),
                percent(row.trainable_params, row.all_params)
            )
        });
    }
    let label = format!("2r/h, square layer, r = {}", config.focus_rank);
    table_row(&mut out, &label, evaluated, |e| {
        format!(
            "{:.3}%",
            square_ratio_percent(config.focus_rank, e.model.dims.hidden)
        )
    });
    table_row(&mut out, "Base model parameters", evaluated, |e| {
        group_digits(e.model.total_params())
    });
    out
}

fn memory_table(config: &Config, evaluated: &[Evaluated]) -> String {
    let mut out = header(evaluated, "Regime: total per GPU (ratio vs first row)");
    for (i, entry) in config.regimes.iter().enumerate() {
        table_row(&mut out, &entry.label, evaluated, |e| {
            let row = &e.cmp.rows[i];
            format!(
                "{} ({:.3})",
                units::binary(row.bytes.total),
                row.ratio_vs_baseline
            )
        });
    }
    out
}

fn fraction_series(config: &Config, evaluated: &[Evaluated]) -> Vec<Series> {
    let mut series: Vec<Series> = config
        .regimes
        .iter()
        .enumerate()
        .filter(|(i, _)| evaluated[0].cmp.rows[*i].frozen_params > 0)
        .map(|(i, entry)| {
            let points: Vec<(f64, f64)> = evaluated
                .iter()
                .map(|e| {
                    let row = &e.cmp.rows[i];
                    (
                        e.model.dims.hidden as f64,
                        percent(row.trainable_params, row.all_params),
                    )
                })
                .collect();
            Series {
                name: entry.label.clone(),
                points: sorted_points(points),
            }
        })
        .collect();
    let mut widths: Vec<u64> = evaluated.iter().map(|e| e.model.dims.hidden).collect();
    widths.sort_unstable();
    widths.dedup();
    series.push(Series {
        name: format!("2r/h, square layer, r = {}", config.focus_rank),
        points: widths
            .iter()
            .map(|&h| (h as f64, square_ratio_percent(config.focus_rank, h)))
            .collect(),
    });
    series
}

fn model_list(evaluated: &[Evaluated]) -> String {
    bullet_list(evaluated.iter().map(|e| {
        format!(
            "{}; {} parameters.",
            model_summary(&e.model),
            group_digits(e.model.total_params())
        )
    }))
}

fn fill_discussion(
    values: &mut Values,
    config: &Config,
    settings: &MemorySettings,
    evaluated: &[Evaluated],
    focus: usize,
) {
    let small = &evaluated[0];
    let large = evaluated
        .iter()
        .max_by_key(|e| e.model.total_params())
        .expect("at least two models");
    let frac = |e: &Evaluated| {
        let r = &e.cmp.rows[focus];
        percent(r.trainable_params, r.all_params)
    };
    let r = config.focus_rank;
    values
        .set("small_name", small.model.name.clone())
        .set("small_hidden", small.model.dims.hidden.to_string())
        .set("small_fraction", format!("{:.2}%", frac(small)))
        .set(
            "small_square",
            format!("{:.2}%", square_ratio_percent(r, small.model.dims.hidden)),
        )
        .set("large_name", large.model.name.clone())
        .set("large_hidden", large.model.dims.hidden.to_string())
        .set("large_fraction", format!("{:.3}%", frac(large)))
        .set(
            "large_square",
            format!("{:.3}%", square_ratio_percent(r, large.model.dims.hidden)),
        )
        .set(
            "fraction_factor",
            format!("{:.0}", frac(small) / frac(large)),
        )
        .set(
            "large_full_total",
            units::binary(large.cmp.rows[0].bytes.total),
        )
        .set(
            "large_focus_total",
            units::binary(large.cmp.rows[focus].bytes.total),
        )
        .set(
            "large_focus_ratio",
            format!("{:.3}", large.cmp.rows[focus].ratio_vs_baseline),
        )
        .set(
            "large_focus_activation_share",
            format!(
                "{:.1}%",
                percent(
                    large.cmp.rows[focus].bytes.activations,
                    large.cmp.rows[focus].bytes.total
                )
            ),
        )
        .set(
            "small_focus_ratio",
            format!("{:.3}", small.cmp.rows[focus].ratio_vs_baseline),
        )
        .set(
            "small_focus_activation_share",
            format!(
                "{:.1}%",
                percent(
                    small.cmp.rows[focus].bytes.activations,
                    small.cmp.rows[focus].bytes.total
                )
            ),
        )
        .set("batch", settings.workload.batch.to_string())
        .set("seq", settings.workload.seq.to_string());
}

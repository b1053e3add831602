//! Kind `scaling` (experiment 31): how the trainable fraction and the memory of one training step
//! move with scale. Part one scales one family in width (`ftbudget_sweep::scale_spec`) and plots
//! LoRA's trainable fraction against the square-layer ratio 2r/h, with the real MiniGPT and
//! LLaMA-2-7B as single points; part two sweeps the sequence length on one production model per
//! regime and solves, exactly, the longest sequence that fits each GPU capacity.

use super::config::{ChartKeys, MemoryKeys, RegimeEntry, build_regimes};
use super::format::{percent, square_ratio_percent};
use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::{MemorySettings, ModelShape, Regime, TrainingPlan, Workload};
use ftbudget_report::chart::{Legend, LineChart, ReferenceLine, Scale, Series, line_chart};
use ftbudget_report::template::Values;
use ftbudget_report::{group_digits, units};
use ftbudget_sweep::{PointEstimate, ScaledShape, evaluate, largest_fitting, width_step};
use serde::Deserialize;

const GIB: u64 = 1 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    fractions: FractionKeys,
    memory_sweep: MemorySweepKeys,
    regimes: Vec<RegimeEntry>,
    memory: MemoryKeys,
}

/// `[fractions]`: the width-scaled family and the LoRA ranks plotted on it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FractionKeys {
    /// Preset whose ratios are scaled.
    family: String,
    layers: u64,
    widths: Vec<u64>,
    /// LoRA ranks (`lora:r=N`, peft's all-linear targets).
    ranks: Vec<u64>,
    /// Ranks whose square-layer line 2r/h is drawn; each must be in `ranks`.
    square_ranks: Vec<u64>,
    /// Real models drawn as single points.
    real_points: Vec<RealPoint>,
    table: String,
    chart: ChartKeys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RealPoint {
    model: String,
    rank: u64,
}

/// `[memory_sweep]`: the model, the sequence lengths and the GPU capacities.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemorySweepKeys {
    model: String,
    seqs: Vec<u64>,
    capacities_gib: Vec<u64>,
    /// Upper bound of the fit search over sequence length.
    fit_max_seq: u64,
    table: String,
    chart: ChartKeys,
}

fn lora(exp: &Experiment, registry: &ftbudget_core::Registry, r: u64) -> Result<Box<dyn Regime>> {
    registry
        .build(&format!("lora:r={r}"))
        .map_err(|e| exp.key_error("fractions.ranks", e))
}

fn point(
    exp: &Experiment,
    key: &str,
    model: &ModelShape,
    regime: &dyn Regime,
    settings: &MemorySettings,
    plan: &mut TrainingPlan,
) -> Result<PointEstimate> {
    evaluate(model, regime, settings, plan).map_err(|e| exp.key_error(key, e))
}

struct Real {
    name: String,
    hidden: u64,
    rank: u64,
    est: PointEstimate,
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    let f = &config.fractions;
    let registry = ftbudget_roster::registry()?;
    let settings = config.memory.settings(exp)?;
    let mut plan = TrainingPlan::default();

    // Part one: the trainable fraction of the width-scaled family.
    let base = ftbudget_models::presets::spec(&f.family)
        .ok_or_else(|| exp.key_error("fractions.family", format!("no preset `{}`", f.family)))?;
    if f.widths.is_empty() || f.ranks.is_empty() {
        return Err(exp.key_error("fractions", "widths and ranks must not be empty"));
    }
    if let Some(r) = f.square_ranks.iter().find(|r| !f.ranks.contains(r)) {
        return Err(exp.key_error("fractions.square_ranks", format!("{r} is not in ranks")));
    }
    let step = width_step(&base);
    let shapes: Vec<ScaledShape> = f
        .widths
        .iter()
        .map(|&w| {
            ScaledShape::build(&base, w, f.layers).map_err(|e| exp.key_error("fractions.widths", e))
        })
        .collect::<Result<_>>()?;
    let regimes: Vec<Box<dyn Regime>> = f
        .ranks
        .iter()
        .map(|&r| lora(exp, &registry, r))
        .collect::<Result<_>>()?;
    // grid[rank][width]
    let mut grid: Vec<Vec<PointEstimate>> = Vec::new();
    for regime in &regimes {
        let mut row = Vec::new();
        for s in &shapes {
            row.push(point(
                exp,
                "fractions.widths",
                &s.shape,
                regime.as_ref(),
                &settings,
                &mut plan,
            )?);
        }
        grid.push(row);
    }
    let mut reals = Vec::new();
    for (i, p) in f.real_points.iter().enumerate() {
        let key = format!("fractions.real_points[{i}]");
        let model = ftbudget_models::load(&p.model).map_err(|e| exp.key_error(&key, e))?;
        let regime = lora(exp, &registry, p.rank)?;
        let est = point(exp, &key, &model, regime.as_ref(), &settings, &mut plan)?;
        reals.push(Real {
            name: model.name.clone(),
            hidden: model.dims.hidden,
            rank: p.rank,
            est,
        });
    }

    let fractions = fractions_table(f, &shapes, &grid, &reals);
    let series = fraction_series(f, &base.name, &shapes, &grid, &reals);
    let fraction_chart = line_chart(&LineChart {
        title: f.chart.title.clone(),
        x_label: "width d = hidden size (log scale)".into(),
        y_label: "trainable parameters, % of all params (log scale)".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        series,
        reference_lines: Vec::new(),
        legend: Legend::UpperRight,
        size: f.chart.size(),
    })
    .map_err(|e| exp.key_error("fractions.chart", e))?;

    // Part two: memory against sequence length on one model, and the fit per capacity.
    let m = &config.memory_sweep;
    if m.seqs.is_empty() || m.capacities_gib.is_empty() {
        return Err(exp.key_error("memory_sweep", "seqs and capacities_gib must not be empty"));
    }
    if !m.seqs.contains(&settings.workload.seq) {
        return Err(exp.key_error(
            "memory.seq",
            "must be one of memory_sweep.seqs (the length the discussion quotes)",
        ));
    }
    let model =
        ftbudget_models::load(&m.model).map_err(|e| exp.key_error("memory_sweep.model", e))?;
    let mem_regimes = build_regimes(exp, &registry, &config.regimes)?;
    let at_seq = |regime: &dyn Regime, seq: u64, plan: &mut TrainingPlan| -> Result<u64> {
        let mut s = settings.clone();
        s.workload = Workload {
            batch: settings.workload.batch,
            seq,
        };
        Ok(point(exp, "memory_sweep", &model, regime, &s, plan)?
            .memory
            .total)
    };
    // totals[regime][seq]
    let mut totals: Vec<Vec<u64>> = Vec::new();
    for regime in &mem_regimes {
        totals.push(
            m.seqs
                .iter()
                .map(|&seq| at_seq(regime.as_ref(), seq, &mut plan))
                .collect::<Result<_>>()?,
        );
    }
    // fits[regime][capacity]: the longest sequence that fits, exactly.
    let mut fits: Vec<Vec<Option<u64>>> = Vec::new();
    for regime in &mem_regimes {
        let mut row = Vec::new();
        for &cap in &m.capacities_gib {
            let capacity = cap * GIB;
            row.push(largest_fitting(m.fit_max_seq, |seq| {
                Ok::<_, anyhow::Error>(at_seq(regime.as_ref(), seq, &mut plan)? <= capacity)
            })?);
        }
        fits.push(row);
    }
    let memory = memory_table(&config, &totals, &fits);
    let memory_chart = line_chart(&memory_chart_spec(&config, &totals))
        .map_err(|e| exp.key_error("memory_sweep.chart", e))?;

    let mut values = Values::new();
    values
        .set("fractions_table", fractions.trim_end())
        .set("fractions_chart", f.chart.file.clone())
        .set("memory_table", memory.trim_end())
        .set("memory_chart", m.chart.file.clone())
        .set("settings", config.memory.markdown_list_except(&["--seq"]))
        .set("regimes", super::config::regime_list(&config.regimes));
    fill_scaling(&mut values, f, &base, step, &shapes, &grid, &reals)?;
    fill_memory(&mut values, &config, &model, &settings, &totals, &fits);

    let report = exp.render_report(&values)?;
    Ok(vec![
        OutputFile::text(&f.table, fractions),
        OutputFile::chart(&f.chart, fraction_chart),
        OutputFile::text(&m.table, memory),
        OutputFile::chart(&m.chart, memory_chart),
        report,
    ])
}

/// The fraction chart's series: one line per rank over the scaled widths, the square-layer
/// ratio 2r/h per square rank, and one point per real model.
fn fraction_series(
    f: &FractionKeys,
    family: &str,
    shapes: &[ScaledShape],
    grid: &[Vec<PointEstimate>],
    reals: &[Real],
) -> Vec<Series> {
    let mut series: Vec<Series> = f
        .ranks
        .iter()
        .zip(grid)
        .map(|(r, row)| Series {
            name: format!("{} family ({} layers), LoRA r={r}", family, f.layers),
            points: shapes
                .iter()
                .zip(row)
                .map(|(s, e)| (s.width as f64, percent(e.trainable_params, e.all_params)))
                .collect(),
        })
        .collect();
    for &r in &f.square_ranks {
        series.push(Series {
            name: format!("2r/h, square layer, r={r}"),
            points: f
                .widths
                .iter()
                .map(|&w| (w as f64, square_ratio_percent(r, w)))
                .collect(),
        });
    }
    for real in reals {
        series.push(Series {
            name: format!(
                "real {} (d={}), LoRA r={}",
                real.name, real.hidden, real.rank
            ),
            points: vec![(
                real.hidden as f64,
                percent(real.est.trainable_params, real.est.all_params),
            )],
        });
    }
    series
}

/// Memory against sequence length per regime, with the capacities as reference lines.
fn memory_chart_spec(config: &Config, totals: &[Vec<u64>]) -> LineChart {
    let m = &config.memory_sweep;
    LineChart {
        title: m.chart.title.clone(),
        x_label: "sequence length in tokens (log scale)".into(),
        y_label: "memory of one training step, GiB (log scale)".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        series: config
            .regimes
            .iter()
            .zip(totals)
            .map(|(entry, row)| Series {
                name: entry.label.clone(),
                points: m
                    .seqs
                    .iter()
                    .zip(row)
                    .map(|(&seq, &t)| (seq as f64, t as f64 / GIB as f64))
                    .collect(),
            })
            .collect(),
        reference_lines: m
            .capacities_gib
            .iter()
            .map(|&c| ReferenceLine {
                y: c as f64,
                label: format!("{c} GiB"),
            })
            .collect(),
        legend: Legend::UpperLeft,
        size: m.chart.size(),
    }
}

fn fractions_table(
    f: &FractionKeys,
    shapes: &[ScaledShape],
    grid: &[Vec<PointEstimate>],
    reals: &[Real],
) -> String {
    let mut out = String::from("| d | heads | d_ff | all params (base) |");
    for r in &f.ranks {
        out.push_str(&format!(" LoRA r={r} |"));
    }
    for r in &f.square_ranks {
        out.push_str(&format!(" 2r/h, r={r} |"));
    }
    out.push_str("\n|---:|---:|---:|---:|");
    for _ in f.ranks.iter().chain(&f.square_ranks) {
        out.push_str("---:|");
    }
    out.push('\n');
    for (j, s) in shapes.iter().enumerate() {
        let d = s.shape.dims;
        out.push_str(&format!(
            "| {} | {} | {} | {} |",
            s.width,
            d.heads,
            d.intermediate,
            group_digits(s.shape.total_params())
        ));
        for row in grid {
            let e = &row[j];
            out.push_str(&format!(
                " {} ({}) |",
                fmt_percent(percent(e.trainable_params, e.all_params)),
                group_digits(e.trainable_params)
            ));
        }
        for &r in &f.square_ranks {
            out.push_str(&format!(
                " {} |",
                fmt_percent(square_ratio_percent(r, s.width))
            ));
        }
        out.push('\n');
    }
    out.push_str("\nReal models (single points on the chart):\n\n");
    out.push_str("| Model | d | LoRA rank | trainable | all params | trainable % | 2r/h |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for real in reals {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            real.name,
            real.hidden,
            real.rank,
            group_digits(real.est.trainable_params),
            group_digits(real.est.all_params),
            fmt_percent(percent(real.est.trainable_params, real.est.all_params)),
            fmt_percent(square_ratio_percent(real.rank, real.hidden))
        ));
    }
    out
}

/// Four significant digits, as a percentage.
fn fmt_percent(p: f64) -> String {
    let digits = if p >= 10.0 {
        2
    } else if p >= 1.0 {
        3
    } else if p >= 0.1 {
        4
    } else if p >= 0.01 {
        5
    } else {
        6
    };
    format!("{p:.digits$}%")
}

fn fit_text(fit: Option<u64>, max: u64) -> String {
    match fit {
        None => "does not fit".into(),
        Some(v) if v == max => format!("≥ {}", group_digits(v)),
        Some(v) => group_digits(v),
    }
}

fn memory_table(config: &Config, totals: &[Vec<u64>], fits: &[Vec<Option<u64>>]) -> String {
    let m = &config.memory_sweep;
    let mut out = String::from("| seq |");
    for e in &config.regimes {
        out.push_str(&format!(" {} |", e.label));
    }
    out.push_str("\n|---:|");
    for _ in &config.regimes {
        out.push_str("---:|");
    }
    out.push('\n');
    for (j, seq) in m.seqs.iter().enumerate() {
        out.push_str(&format!("| {} |", group_digits(*seq)));
        for row in totals {
            out.push_str(&format!(" {} |", units::binary(row[j])));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\nLongest sequence that fits (batch {}, exact solve; search bound {}):\n\n| Regime |",
        config.memory.batch,
        group_digits(m.fit_max_seq)
    ));
    for c in &m.capacities_gib {
        out.push_str(&format!(" {c} GiB |"));
    }
    out.push_str("\n|---|");
    for _ in &m.capacities_gib {
        out.push_str("---:|");
    }
    out.push('\n');
    for (e, row) in config.regimes.iter().zip(fits) {
        out.push_str(&format!("| {} |", e.label));
        for fit in row {
            out.push_str(&format!(" {} |", fit_text(*fit, m.fit_max_seq)));
        }
        out.push('\n');
    }
    out
}

fn fill_scaling(
    values: &mut Values,
    f: &FractionKeys,
    base: &ftbudget_core::TransformerSpec,
    step: u64,
    shapes: &[ScaledShape],
    grid: &[Vec<PointEstimate>],
    reals: &[Real],
) -> Result<()> {
    let frac = |e: &PointEstimate| percent(e.trainable_params, e.all_params);
    let (first, last) = (&shapes[0], &shapes[shapes.len() - 1]);
    let focus = f.square_ranks.first().copied().unwrap_or(f.ranks[0]);
    let k = f.ranks.iter().position(|&r| r == focus).unwrap_or(0);
    let row = &grid[k];
    let (lo, hi) = (&row[0], &row[row.len() - 1]);
    let real = |i: usize| -> Result<&Real> {
        reals
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("fractions.real_points: two real points are needed"))
    };
    let (small, large) = (real(0)?, real(1)?);
    values
        .set("family", base.name.clone())
        .set("layers", f.layers.to_string())
        .set("base_hidden", base.hidden.to_string())
        .set("base_heads", base.heads.to_string())
        .set("base_intermediate", base.intermediate.to_string())
        .set("base_vocab", base.vocab.to_string())
        .set("width_step", step.to_string())
        .set("width_min", first.width.to_string())
        .set("width_max", last.width.to_string())
        .set("max_heads", last.shape.dims.heads.to_string())
        .set("max_intermediate", last.shape.dims.intermediate.to_string())
        .set("max_params", group_digits(last.shape.total_params()))
        .set(
            "ranks",
            f.ranks
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .set("focus_rank", focus.to_string())
        .set("per_layer_factor", (18 * focus).to_string())
        .set("focus_min_fraction", fmt_percent(frac(lo)))
        .set(
            "focus_min_square",
            fmt_percent(square_ratio_percent(focus, first.width)),
        )
        .set("focus_max_fraction", fmt_percent(frac(hi)))
        .set(
            "focus_max_square",
            fmt_percent(square_ratio_percent(focus, last.width)),
        )
        .set(
            "focus_max_over_square",
            format!("{:.3}", frac(hi) / square_ratio_percent(focus, last.width)),
        )
        .set(
            "focus_min_over_square",
            format!("{:.3}", frac(lo) / square_ratio_percent(focus, first.width)),
        )
        .set("small_name", small.name.clone())
        .set("small_hidden", small.hidden.to_string())
        .set("small_fraction", fmt_percent(frac(&small.est)))
        .set("large_name", large.name.clone())
        .set("large_hidden", large.hidden.to_string())
        .set("large_rank", large.rank.to_string())
        .set("large_fraction", fmt_percent(frac(&large.est)))
        .set(
            "large_square",
            fmt_percent(square_ratio_percent(large.rank, large.hidden)),
        )
        .set(
            "large_over_square",
            format!(
                "{:.3}",
                frac(&large.est) / square_ratio_percent(large.rank, large.hidden)
            ),
        );
    Ok(())
}

fn fill_memory(
    values: &mut Values,
    config: &Config,
    model: &ModelShape,
    settings: &MemorySettings,
    totals: &[Vec<u64>],
    fits: &[Vec<Option<u64>>],
) {
    let m = &config.memory_sweep;
    let j = m
        .seqs
        .iter()
        .position(|&s| s == settings.workload.seq)
        .expect("checked in generate");
    let last = m.seqs.len() - 1;
    values
        .set("memory_model", model.name.clone())
        .set("memory_params", group_digits(model.total_params()))
        .set("seq_min", group_digits(m.seqs[0]))
        .set("seq_max", group_digits(m.seqs[last]))
        .set("seq", group_digits(settings.workload.seq))
        .set(
            "capacities",
            m.capacities_gib
                .iter()
                .map(|c| format!("{c} GiB"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    // Per regime, by position: totals at the quoted seq and the largest seq, and the fit at the
    // largest capacity and the smallest.
    for (i, (row, fit)) in totals.iter().zip(fits).enumerate() {
        let growth = row[last] as f64 / row[0] as f64;
        values
            .set(&format!("r{i}_label"), config.regimes[i].label.clone())
            .set(&format!("r{i}_at_seq"), units::binary(row[j]))
            .set(&format!("r{i}_at_min"), units::binary(row[0]))
            .set(&format!("r{i}_at_max"), units::binary(row[last]))
            .set(&format!("r{i}_growth"), format!("{growth:.1}"))
            .set(&format!("r{i}_fit_small"), fit_text(fit[0], m.fit_max_seq))
            .set(
                &format!("r{i}_fit_large"),
                fit_text(fit[fit.len() - 1], m.fit_max_seq),
            );
    }
    let cap = |k: usize| format!("{} GiB", m.capacities_gib[k]);
    values
        .set("cap_small", cap(0))
        .set("cap_large", cap(m.capacities_gib.len() - 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minigpt_family_lora_trains_18_r_w_per_layer() {
        // Hand count: q, k, v, o are w x w: 4 x (w + w) r; the plain MLP is w -> 4w -> w:
        // 2 x (w + 4w) r. Total 8rw + 10rw = 18rw per layer, 4 layers.
        let registry = ftbudget_roster::registry().unwrap();
        let base = ftbudget_models::presets::spec("minigpt").unwrap();
        let mut plan = TrainingPlan::default();
        for (w, r) in [(64u64, 8u64), (1024, 4), (4096, 64)] {
            let shape = ScaledShape::build(&base, w, 4).unwrap().shape;
            let regime = registry.build(&format!("lora:r={r}")).unwrap();
            let e = evaluate(&shape, regime.as_ref(), &MemorySettings::seed(), &mut plan).unwrap();
            assert_eq!(e.trainable_params, 4 * 18 * r * w, "w={w} r={r}");
            // Frozen: 4 layers of 12 w^2, tied 512 x w embedding, 2 norms per layer + final.
            assert_eq!(e.frozen_params, 4 * 12 * w * w + 512 * w + 9 * w);
            if (w, r) == (64, 8) {
                // The seed lab's MiniGPT at r=8: 4 layers x 9,216 (lab Block B).
                assert_eq!(e.trainable_params, 36_864);
            }
        }
    }
}

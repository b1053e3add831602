//! Kind `compute-cost` (experiment 34): what fine-tuning on a token budget costs in FLOPs, hours
//! and money per regime and GPU, from FlopCounterMode-exact step FLOPs (`ftbudget_core::flops`),
//! set against the `6 N D` rule and the "LoRA costs about 2/3 of full fine-tuning" rule of thumb.

use super::config::{ChartKeys, MemoryKeys, RegimeEntry, build_regimes};
use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::{
    Checkpointing, FlopSettings, MemorySettings, ModelShape, Regime, StepFlops, step_flops,
};
use ftbudget_report::chart::{Segment, StackedBars, stacked_bars};
use ftbudget_report::template::Values;
use ftbudget_sweep::gpu::{GPU_PRESETS, GpuPreset};
use ftbudget_sweep::timing::{PeakDtype, Timing, TimingInputs};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// Preset names or config paths.
    models: Vec<String>,
    /// Tokens trained on.
    tokens: u64,
    /// GPU presets, with the price of one GPU-hour each (an assumption stated in the report).
    gpus: Vec<GpuEntry>,
    mfu: f64,
    /// The first regime is full fine-tuning, the second the LoRA the rule of thumb is about.
    regimes: Vec<RegimeEntry>,
    memory: MemoryKeys,
    table: String,
    chart: ChartKeys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuEntry {
    preset: String,
    price_per_gpu_hour: f64,
}

struct Cell {
    flops: StepFlops,
    /// The same step with full checkpointing.
    checkpointed: StepFlops,
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    if config.regimes.len() < 2 {
        return Err(exp.key_error("regimes", "full fine-tuning and a LoRA are needed"));
    }
    if !(config.mfu > 0.0 && config.mfu <= 1.0) {
        return Err(exp.key_error("mfu", "not in (0, 1]"));
    }
    let registry = ftbudget_roster::registry()?;
    let regimes = build_regimes(exp, &registry, &config.regimes)?;
    let settings = config.memory.settings(exp)?;
    let gpus: Vec<&GpuPreset> = config
        .gpus
        .iter()
        .enumerate()
        .map(|(i, g)| {
            GPU_PRESETS
                .iter()
                .find(|p| p.name == g.preset)
                .ok_or_else(|| exp.key_error(&format!("gpus[{i}].preset"), "not a GPU preset"))
        })
        .collect::<Result<_>>()?;
    let mut models = Vec::new();
    for (i, name) in config.models.iter().enumerate() {
        let model =
            ftbudget_models::load(name).map_err(|e| exp.key_error(&format!("models[{i}]"), e))?;
        let cells = regimes
            .iter()
            .map(|r| cell(&model, r.as_ref(), &settings))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| exp.key_error(&format!("models[{i}]"), e))?;
        models.push((model, cells));
    }
    let table = table(&config, &settings, &gpus, &models)?;
    let chart = chart(&config, &models).map_err(|e| exp.key_error("chart", e))?;
    let mut values = Values::new();
    values
        .set("table", table.trim_end())
        .set("chart_file", config.chart.file.clone())
        .set("settings", config.memory.markdown_list())
        .set("tokens", ftbudget_report::group_digits(config.tokens))
        .set("mfu", format!("{:.2}", config.mfu))
        .set("gpus", gpu_list(&config, &gpus))
        .set("findings", findings(&config, &models));
    Ok(vec![
        OutputFile::text(&config.table, table),
        OutputFile::chart(&config.chart, chart),
        exp.render_report(&values)?,
    ])
}

fn cell(model: &ModelShape, regime: &dyn Regime, settings: &MemorySettings) -> Result<Cell> {
    let plan = regime.plan(model)?;
    let mut flop_settings = FlopSettings::of(settings);
    let flops = step_flops(model, &plan, &flop_settings)?;
    flop_settings.checkpointing = Checkpointing::Full;
    let checkpointed = step_flops(model, &plan, &flop_settings)?;
    Ok(Cell {
        flops,
        checkpointed,
    })
}

/// The run's timing on `gpu` at its bf16 peak (the shared `ftbudget_sweep::timing`).
fn timing(
    config: &Config,
    settings: &MemorySettings,
    gpu: &GpuPreset,
    price: f64,
) -> Result<Timing> {
    Ok(Timing::new(&TimingInputs {
        gpu: gpu.name,
        peak: Some(PeakDtype::Bf16),
        precision: settings.precision,
        mfu: Some(config.mfu),
        gpus: settings.sharding.gpus,
        price_per_gpu_hour: Some(price),
    })?)
}

fn six_n_d(model: &ModelShape, tokens: u64) -> u128 {
    6 * u128::from(model.total_params()) * u128::from(tokens)
}

fn table(
    config: &Config,
    settings: &MemorySettings,
    gpus: &[&GpuPreset],
    models: &[(ModelShape, Vec<Cell>)],
) -> Result<String> {
    let mut out = String::from(
        "| Model | Regime | FLOPs per token | vs 6N | vs full FT | with checkpointing, vs full FT |",
    );
    for g in gpus {
        out.push_str(&format!(" {} hours | {} cost |", g.name, g.name));
    }
    out.push_str("\n|---|---|---:|---:|---:|---:|");
    for _ in gpus {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for (model, cells) in models {
        let full = &cells[0];
        let per_token_6n = 6.0 * model.total_params() as f64;
        for (entry, c) in config.regimes.iter().zip(cells) {
            out.push_str(&format!(
                "| {} | {} | {:.2} GFLOP | {:.3} | {:.3} | {:.3} |",
                model.name,
                entry.label,
                c.flops.per_token as f64 / 1e9,
                c.flops.per_token as f64 / per_token_6n,
                c.flops.step as f64 / full.flops.step as f64,
                c.checkpointed.step as f64 / full.checkpointed.step as f64,
            ));
            for (g, entry) in gpus.iter().zip(&config.gpus) {
                let w = settings.workload;
                let cost = timing(config, settings, g, entry.price_per_gpu_hour)?
                    .run(&c.flops, w.batch * w.seq, u128::from(config.tokens))
                    .ok_or_else(|| anyhow::anyhow!("{}: the run's FLOPs overflow", model.name))?;
                out.push_str(&format!(
                    " {:.1} | {:.0} |",
                    cost.gpu_hours,
                    cost.cost.unwrap_or_default()
                ));
            }
            out.push('\n');
        }
        let reference = six_n_d(model, config.tokens);
        out.push_str(&format!(
            "| {} | 6·N·D | {:.2} GFLOP | 1.000 | {:.3} | |",
            model.name,
            6.0 * model.total_params() as f64 / 1e9,
            reference as f64 / (full.flops.step as f64 * steps(config, settings) as f64)
        ));
        for (g, entry) in gpus.iter().zip(&config.gpus) {
            let hours = timing(config, settings, g, entry.price_per_gpu_hour)?
                .gpu_seconds(reference)
                / 3600.0;
            out.push_str(&format!(
                " {:.1} | {:.0} |",
                hours,
                hours * entry.price_per_gpu_hour
            ));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Steps of one GPU's micro-batch for the token budget (data-parallel GPUs share it).
fn steps(config: &Config, settings: &MemorySettings) -> u128 {
    let per_step = u128::from(settings.workload.batch * settings.workload.seq)
        * u128::from(settings.sharding.gpus);
    u128::from(config.tokens).div_ceil(per_step) * u128::from(settings.sharding.gpus)
}

fn chart(config: &Config, models: &[(ModelShape, Vec<Cell>)]) -> Result<Vec<u8>, String> {
    let mut categories = Vec::new();
    let mut segments: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (model, cells) in models {
        for (entry, c) in config.regimes.iter().zip(cells) {
            categories.push(format!("{} ({})", entry.label, model.name));
            let f = &c.checkpointed;
            for (i, v) in [f.forward, f.backward, f.recompute].into_iter().enumerate() {
                let per_token = v as f64 / (f.step as f64 / f.per_token as f64) / 1e9;
                segments.entry(i).or_default().push(per_token);
            }
        }
    }
    let names = [
        "Forward",
        "Backward (gradients)",
        "Recompute (checkpointing)",
    ];
    stacked_bars(&StackedBars {
        title: config.chart.title.clone(),
        categories,
        segments: segments
            .into_iter()
            .map(|(i, values)| Segment {
                name: names[i].to_string(),
                values,
            })
            .collect(),
        y_label: "GFLOP per token (FlopCounterMode's count)".into(),
        size: config.chart.size(),
    })
    .map_err(|e| e.to_string())
}

fn gpu_list(config: &Config, gpus: &[&GpuPreset]) -> String {
    gpus.iter()
        .zip(&config.gpus)
        .map(|(g, e)| {
            format!(
                "- `{}`: {:.1} TFLOP/s dense bf16 ({}), {:.2} per GPU-hour (an assumed price)",
                g.name,
                g.peak.bf16 as f64 / 1e12,
                g.peak.source,
                e.price_per_gpu_hour
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn findings(config: &Config, models: &[(ModelShape, Vec<Cell>)]) -> String {
    let mut lines = Vec::new();
    for (model, cells) in models {
        let full = &cells[0];
        let lora = &cells[1];
        let ratio = lora.flops.step as f64 / full.flops.step as f64;
        let ckpt = lora.checkpointed.step as f64 / full.checkpointed.step as f64;
        let vs_6n = full.flops.per_token as f64 / (6.0 * model.total_params() as f64);
        lines.push(format!(
            "- {}: {} costs {:.1}% of full fine-tuning's FLOPs per step ({:.1}% with checkpointing \
             on both); full fine-tuning is {:.3} x 6·N per token (attention at seq {} and the \
             lm_head on every position add to 6·N).",
            model.name,
            config.regimes[1].label,
            100.0 * ratio,
            100.0 * ckpt,
            vs_6n,
            config.memory.seq,
        ));
    }
    lines.join("\n")
}

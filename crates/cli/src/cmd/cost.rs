//! `ftbudget cost`: what a run costs in FLOPs, hours and money, per regime. Step FLOPs are
//! FlopCounterMode's count (`ftbudget_core::flops`); time is those FLOPs over the GPUs' datasheet
//! peak times an MFU (a stated assumption, overridable); money is GPU-hours times a price.

use crate::args::{MemoryArgs, TimingArgs};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table, presets};
use ftbudget_core::{FlopSettings, ModelShape, Regime, StepFlops, step_flops};
use ftbudget_report::group_digits;
use ftbudget_sweep::timing::DEFAULT_TIMING_GPU;
use ftbudget_sweep::{PeakDtype, RunCost, Timing};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Csv,
}

#[derive(Args)]
pub struct CostArgs {
    /// A preset name, a path to a config.json / safetensors model, or a Hugging Face Hub id
    #[arg(long, default_value = "minigpt")]
    pub model: String,
    /// With a Hub id: count parameters from the checkpoint's safetensors headers
    #[arg(long)]
    pub exact_from_hub: bool,
    /// Regime specs (as for `estimate`); the first is the baseline of the ratio column
    #[arg(long = "regime")]
    pub regimes: Vec<String>,
    /// A GPU preset (rtx-3090, rtx-4090, l4, a100-40g, a100-80g, h100-80g, h200): its datasheet
    /// peak FLOP/s times the MFU
    #[arg(long, default_value = DEFAULT_TIMING_GPU)]
    pub gpu: String,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub memory: MemoryArgs,
}

/// One regime's figures.
#[derive(Debug, Clone, Serialize)]
struct CostRow {
    regime: String,
    label: String,
    flops: StepFlops,
    #[serde(flatten)]
    run: RunCost,
    /// `6 x total params x tokens`, the usual rule.
    six_n_d: u128,
    /// `total_flops / six_n_d`.
    ratio_vs_six_n_d: f64,
    /// This row's total FLOPs over the first row's.
    ratio_vs_baseline: f64,
}

/// The whole answer (the JSON contract).
#[derive(Debug, Clone, Serialize)]
struct CostReport {
    model: String,
    total_params: u64,
    tokens: u128,
    batch: u64,
    seq: u64,
    #[serde(flatten)]
    timing: Timing,
    attention: String,
    checkpointing: String,
    rows: Vec<CostRow>,
}

fn cost_row(
    model: &ModelShape,
    regime: &dyn Regime,
    flop_settings: &FlopSettings,
    timing: &Timing,
    tokens: u128,
) -> Result<CostRow> {
    let plan = regime.plan(model)?;
    let flops = step_flops(model, &plan, flop_settings)?;
    let tokens_per_gpu_step = flop_settings.batch * flop_settings.seq;
    let cost = timing
        .run(&flops, tokens_per_gpu_step, tokens)
        .context("--tokens: the run's FLOPs exceed 2^128")?;
    let six_n_d = 6 * u128::from(model.total_params()) * tokens;
    Ok(CostRow {
        regime: regime.spec(),
        label: regime.label(),
        flops,
        run: cost,
        six_n_d,
        ratio_vs_six_n_d: cost.total_flops as f64 / six_n_d as f64,
        ratio_vs_baseline: 0.0,
    })
}

pub fn run(args: CostArgs) -> Result<()> {
    let mut settings = args.memory.settings()?;
    let model = crate::args::load_model(
        &args.model,
        args.exact_from_hub,
        &mut settings,
        args.memory.seq.is_some(),
    )?;
    let tokens = args
        .timing
        .tokens()?
        .context("--tokens: give --tokens N or --dataset-tokens N [--epochs E]")?;
    let timing = args.timing.timing(&args.gpu, &settings)?;
    let registry = ftbudget_roster::registry()?;
    let specs = crate::args::regime_specs(&args.regimes, super::estimate::DEFAULT_REGIMES);
    let flop_settings = FlopSettings::of(&settings);
    let w = settings.workload;
    let mut rows = specs
        .iter()
        .map(|s| {
            let regime = registry.build(s)?;
            cost_row(&model, regime.as_ref(), &flop_settings, &timing, tokens)
        })
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("--regime {}", specs[i])))
        .collect::<Result<Vec<_>>>()?;
    let baseline = rows[0].run.total_flops as f64;
    for row in &mut rows {
        row.ratio_vs_baseline = row.run.total_flops as f64 / baseline;
    }
    let report = CostReport {
        model: model.name.clone(),
        total_params: model.total_params(),
        tokens,
        batch: w.batch,
        seq: w.seq,
        timing,
        attention: settings.activations.attention.to_string(),
        checkpointing: format!("{:?}", settings.activations.checkpointing).to_lowercase(),
        rows,
    };
    let out = match args.format {
        Format::Table => render_table(&report, false),
        Format::Markdown => render_table(&report, true),
        Format::Json => serde_json::to_string_pretty(&report)?,
        Format::Csv => render_csv(&report)?,
    };
    crate::output::emit(&out)
}

/// FLOPs with an SI prefix (`1.23 PFLOP`), for tables.
pub(crate) fn si_flops(flops: u128) -> String {
    let units = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
    let mut value = flops as f64;
    let mut i = 0;
    while value >= 1000.0 && i + 1 < units.len() {
        value /= 1000.0;
        i += 1;
    }
    format!("{value:.3} {}FLOP", units[i])
}

pub(crate) fn hours(h: f64) -> String {
    if h >= 1.0 {
        format!("{h:.1} h")
    } else {
        format!("{:.1} min", h * 60.0)
    }
}

fn render_table(r: &CostReport, markdown: bool) -> String {
    let mut table = Table::new();
    table.load_preset(if markdown {
        presets::ASCII_MARKDOWN
    } else {
        presets::UTF8_FULL_CONDENSED
    });
    let mut header = vec![
        "Regime",
        "Step FLOPs",
        "Tokens/step",
        "Steps",
        "Total FLOPs",
        "vs 6ND",
        "Wall time",
        "GPU-hours",
    ];
    if r.timing.price_per_gpu_hour.is_some() {
        header.push("Cost");
    }
    header.push("Ratio vs first");
    table.set_header(header);
    for row in &r.rows {
        let mut cells = vec![
            Cell::new(&row.label),
            Cell::new(si_flops(row.flops.step)),
            Cell::new(group_digits(row.run.tokens_per_step as u64)),
            Cell::new(row.run.steps.to_string()),
            Cell::new(si_flops(row.run.total_flops)),
            Cell::new(format!("{:.3}", row.ratio_vs_six_n_d)),
            Cell::new(hours(row.run.seconds / 3600.0)),
            Cell::new(format!("{:.1}", row.run.gpu_hours)),
        ];
        if let Some(c) = row.run.cost {
            cells.push(Cell::new(format!("{c:.2}")));
        }
        cells.push(Cell::new(format!("{:.3}", row.ratio_vs_baseline)));
        table.add_row(cells);
    }
    for i in 1..table.column_count() {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!(
        "{} ({} params), {} tokens, batch {} x seq {} on {} x {}; attention {}, checkpointing {}\n{}\n{table}",
        r.model,
        group_digits(r.total_params),
        group_digits_u128(r.tokens),
        r.batch,
        r.seq,
        r.timing.gpus,
        r.timing.gpu,
        r.attention,
        r.checkpointing,
        timing_statement(&r.timing),
    )
}

/// The peak and MFU a time is computed at, in one line (`cost` and `fit` tables).
pub(crate) fn timing_statement(t: &Timing) -> String {
    let mfu_note = if t.mfu_is_default {
        " (the default, an assumption: set --mfu)"
    } else {
        ""
    };
    format!(
        "peak {:.1} TFLOP/s dense {} per GPU ({}) x MFU {:.2}{mfu_note}",
        t.peak_flops_per_gpu as f64 / 1e12,
        t.peak_dtype,
        t.peak_source,
        t.mfu,
    )
}

pub(crate) fn group_digits_u128(n: u128) -> String {
    match u64::try_from(n) {
        Ok(n) => group_digits(n),
        Err(_) => n.to_string(),
    }
}

/// One CSV line per regime, the settings repeated on each.
#[derive(Serialize)]
struct CsvRow<'a> {
    model: &'a str,
    regime: &'a str,
    label: &'a str,
    tokens: u128,
    batch: u64,
    seq: u64,
    gpus: u64,
    gpu: &'a str,
    peak_dtype: PeakDtype,
    peak_flops_per_gpu: u64,
    mfu: f64,
    flops_forward: u128,
    flops_backward: u128,
    flops_recompute: u128,
    flops_step: u128,
    flops_per_token: u128,
    tokens_per_step: u128,
    steps: u128,
    total_flops: u128,
    six_n_d: u128,
    seconds: f64,
    gpu_hours: f64,
    cost: Option<f64>,
}

fn render_csv(r: &CostReport) -> Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in &r.rows {
        writer.serialize(CsvRow {
            model: &r.model,
            regime: &row.regime,
            label: &row.label,
            tokens: r.tokens,
            batch: r.batch,
            seq: r.seq,
            gpus: r.timing.gpus,
            gpu: r.timing.gpu,
            peak_dtype: r.timing.peak_dtype,
            peak_flops_per_gpu: r.timing.peak_flops_per_gpu,
            mfu: r.timing.mfu,
            flops_forward: row.flops.forward,
            flops_backward: row.flops.backward,
            flops_recompute: row.flops.recompute,
            flops_step: row.flops.step,
            flops_per_token: row.flops.per_token,
            tokens_per_step: row.run.tokens_per_step,
            steps: row.run.steps,
            total_flops: row.run.total_flops,
            six_n_d: row.six_n_d,
            seconds: row.run.seconds,
            gpu_hours: row.run.gpu_hours,
            cost: row.run.cost,
        })?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

//! `ftbudget cost`: what a run costs in FLOPs, hours and money, per regime. Step FLOPs are
//! FlopCounterMode's count (`ftbudget_core::flops`); time is those FLOPs over the GPUs' datasheet
//! peak times an MFU (a stated assumption, overridable); money is GPU-hours times a price.

use crate::args::MemoryArgs;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table, presets};
use ftbudget_core::{
    FlopSettings, ModelShape, Precision, Regime, RunCost, RunSettings, StepFlops, run_cost,
    step_flops,
};
use ftbudget_report::group_digits;
use ftbudget_sweep::gpu::{GPU_PRESETS, GpuPreset};
use serde::Serialize;

/// The MFU assumed when `--mfu` is not given: a round figure below what tuned large-scale
/// pre-training reports (PaLM 46%, Megatron-LM 40-50% on A100s), as fine-tuning runs seldom reach
/// those.
pub const DEFAULT_MFU: f64 = 0.4;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Csv,
}

/// Which of the GPU's peaks the run is timed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeakDtype {
    Bf16,
    Fp16,
    Fp8,
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
    /// Tokens to train on in total (1000000000, 1_000_000_000, 1e9, 1B, 500M, 2T)
    #[arg(long, value_parser = parse_tokens, conflicts_with = "dataset_tokens")]
    pub tokens: Option<u128>,
    /// Tokens in the dataset (with --epochs)
    #[arg(long, value_parser = parse_tokens)]
    pub dataset_tokens: Option<u128>,
    /// Passes over the dataset
    #[arg(long, default_value_t = 1, requires = "dataset_tokens")]
    pub epochs: u64,
    /// A GPU preset (see the list in `--help` of `fit`): its datasheet peak FLOP/s times the MFU
    #[arg(long, default_value = "h100-80g")]
    pub gpu: String,
    /// Model FLOPs utilization: the fraction of the peak reached on the counted FLOPs
    #[arg(long, default_value_t = DEFAULT_MFU)]
    pub mfu: f64,
    /// Price of one GPU-hour (any currency); without it no cost column
    #[arg(long)]
    pub price_per_gpu_hour: Option<f64>,
    /// The peak to use: bf16 | fp16 | fp8 (default: fp16 for fp16 precisions, else bf16)
    #[arg(long)]
    pub peak: Option<PeakDtype>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub memory: MemoryArgs,
}

/// `1000`, `1_000`, `1e9`, `2.5e9`, `500K`, `500M`, `1B`, `1G`, `2T` (decimal): a whole number of
/// tokens, at least 1.
pub fn parse_tokens(text: &str) -> Result<u128, String> {
    let t = text.trim().replace('_', "");
    let (num, scale): (&str, u32) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 3),
        Some('m' | 'M') => (&t[..t.len() - 1], 6),
        Some('b' | 'B' | 'g' | 'G') => (&t[..t.len() - 1], 9),
        Some('t' | 'T') => (&t[..t.len() - 1], 12),
        _ => (&t[..], 0),
    };
    let (mantissa, exponent) = match num.split_once(['e', 'E']) {
        Some((m, e)) => (
            m,
            e.parse::<u32>()
                .map_err(|_| format!("`{text}` is not a token count"))?,
        ),
        None => (num, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a token count"));
    }
    let value: u128 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let power = (scale + exponent)
        .checked_sub(frac.len() as u32)
        .ok_or_else(|| format!("`{text}` is not a whole number of tokens"))?;
    let tokens = 10u128
        .checked_pow(power)
        .and_then(|p| value.checked_mul(p))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if tokens == 0 {
        return Err(format!("`{text}`: at least one token"));
    }
    Ok(tokens)
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
    cost: Option<f64>,
}

/// The whole answer (the JSON contract).
#[derive(Debug, Clone, Serialize)]
struct CostReport {
    model: String,
    total_params: u64,
    tokens: u128,
    batch: u64,
    seq: u64,
    gpus: u64,
    gpu: &'static str,
    peak_dtype: PeakDtype,
    peak_flops_per_gpu: u64,
    peak_source: &'static str,
    mfu: f64,
    mfu_is_default: bool,
    price_per_gpu_hour: Option<f64>,
    attention: String,
    checkpointing: String,
    rows: Vec<CostRow>,
}

fn preset(name: &str) -> Result<&'static GpuPreset> {
    GPU_PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
        .with_context(|| {
            let names: Vec<&str> = GPU_PRESETS.iter().map(|p| p.name).collect();
            format!(
                "--gpu: `{name}` is not a preset with a datasheet peak (expected one of: {})",
                names.join(", ")
            )
        })
}

fn peak_of(gpu: &GpuPreset, dtype: PeakDtype) -> Result<u64> {
    match dtype {
        PeakDtype::Bf16 => Ok(gpu.peak.bf16),
        PeakDtype::Fp16 => Ok(gpu.peak.fp16),
        PeakDtype::Fp8 => gpu
            .peak
            .fp8
            .with_context(|| format!("--peak: {} has no FP8 tensor cores", gpu.name)),
    }
}

fn total_tokens(args: &CostArgs) -> Result<u128> {
    match (args.tokens, args.dataset_tokens) {
        (Some(t), None) => Ok(t),
        (None, Some(d)) => {
            if args.epochs == 0 {
                bail!("--epochs: at least 1");
            }
            d.checked_mul(u128::from(args.epochs))
                .context("--epochs: dataset tokens x epochs is too large")
        }
        _ => bail!("--tokens: give --tokens N or --dataset-tokens N [--epochs E]"),
    }
}

fn cost_row(
    model: &ModelShape,
    regime: &dyn Regime,
    flop_settings: &FlopSettings,
    run: &RunSettings,
    price: Option<f64>,
) -> Result<CostRow> {
    let plan = regime.plan(model)?;
    let flops = step_flops(model, &plan, flop_settings)?;
    let cost = run_cost(&flops, run).context("--tokens: the run's FLOPs exceed 2^128")?;
    let six_n_d = 6 * u128::from(model.total_params()) * run.tokens;
    Ok(CostRow {
        regime: regime.spec(),
        label: regime.label(),
        flops,
        run: cost,
        six_n_d,
        ratio_vs_six_n_d: cost.total_flops as f64 / six_n_d as f64,
        ratio_vs_baseline: 0.0,
        cost: price.map(|p| cost.gpu_hours * p),
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
    if !(args.mfu > 0.0 && args.mfu <= 1.0) {
        bail!("--mfu: {} is not in (0, 1]", args.mfu);
    }
    if let Some(p) = args.price_per_gpu_hour
        && !(p.is_finite() && p >= 0.0)
    {
        bail!("--price-per-gpu-hour: {p} is not a price");
    }
    let tokens = total_tokens(&args)?;
    let gpu = preset(&args.gpu)?;
    let peak_dtype = args.peak.unwrap_or(match settings.precision {
        Precision::AmpFp16 | Precision::Fp16 | Precision::SeedMixed => PeakDtype::Fp16,
        _ => PeakDtype::Bf16,
    });
    let peak = peak_of(gpu, peak_dtype)?;
    let registry = ftbudget_roster::registry()?;
    let specs = crate::args::regime_specs(&args.regimes, super::estimate::DEFAULT_REGIMES);
    let flop_settings = FlopSettings::of(&settings);
    let w = settings.workload;
    let run = RunSettings {
        tokens,
        gpus: settings.sharding.gpus,
        tokens_per_gpu_step: w.batch * w.seq,
        peak_flops: peak,
        mfu: args.mfu,
    };
    let mut rows = specs
        .iter()
        .map(|s| {
            let regime = registry.build(s)?;
            cost_row(
                &model,
                regime.as_ref(),
                &flop_settings,
                &run,
                args.price_per_gpu_hour,
            )
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
        gpus: settings.sharding.gpus,
        gpu: gpu.name,
        peak_dtype,
        peak_flops_per_gpu: peak,
        peak_source: gpu.peak.source,
        mfu: args.mfu,
        mfu_is_default: args.mfu == DEFAULT_MFU,
        price_per_gpu_hour: args.price_per_gpu_hour,
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
fn si_flops(flops: u128) -> String {
    let units = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
    let mut value = flops as f64;
    let mut i = 0;
    while value >= 1000.0 && i + 1 < units.len() {
        value /= 1000.0;
        i += 1;
    }
    format!("{value:.3} {}FLOP", units[i])
}

fn hours(h: f64) -> String {
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
    if r.price_per_gpu_hour.is_some() {
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
        if let Some(c) = row.cost {
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
    let mfu_note = if r.mfu_is_default {
        " (the default, an assumption: set --mfu)"
    } else {
        ""
    };
    format!(
        "{} ({} params), {} tokens, batch {} x seq {} on {} x {}; attention {}, checkpointing {}\n\
         peak {:.1} TFLOP/s dense {:?} per GPU ({}) x MFU {:.2}{mfu_note}\n{table}",
        r.model,
        group_digits(r.total_params),
        group_digits_u128(r.tokens),
        r.batch,
        r.seq,
        r.gpus,
        r.gpu,
        r.attention,
        r.checkpointing,
        r.peak_flops_per_gpu as f64 / 1e12,
        r.peak_dtype,
        r.peak_source,
        r.mfu,
    )
    .replace("Bf16", "bf16")
    .replace("Fp16", "fp16")
    .replace("Fp8", "fp8")
}

fn group_digits_u128(n: u128) -> String {
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
            gpus: r.gpus,
            gpu: r.gpu,
            peak_dtype: r.peak_dtype,
            peak_flops_per_gpu: r.peak_flops_per_gpu,
            mfu: r.mfu,
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
            cost: row.cost,
        })?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::parse_tokens;

    #[test]
    fn token_counts_are_exact() {
        assert_eq!(parse_tokens("1000000000"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("1_000_000_000"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("2.5e9"), Ok(2_500_000_000));
        assert_eq!(parse_tokens("1B"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("500M"), Ok(500_000_000));
        assert_eq!(parse_tokens("1.5T"), Ok(1_500_000_000_000));
        assert!(parse_tokens("1.5").is_err());
        assert!(parse_tokens("0").is_err());
        assert!(parse_tokens("abc").is_err());
        assert!(parse_tokens("").is_err());
    }
}

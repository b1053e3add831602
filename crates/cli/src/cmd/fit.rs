//! `ftbudget fit`: for each regime, does the workload fit on this GPU, and what are the largest
//! batch, sequence length and LoRA rank that fit (solved exactly by crates/sweep).

use crate::args::{CudaArgs, MemoryArgs, TimingArgs};
use crate::recipe::RecipeArgs;
use anyhow::Result;
use clap::{Args, ValueEnum};
use ftbudget_core::FitMargin;
use ftbudget_report::{group_digits, units};
use ftbudget_server::answers::{FitOverhead, FitReport, FitTiming};
use ftbudget_sweep::{Limit, parse_gpu};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FitFormat {
    Table,
    Json,
    Csv,
}

/// Regimes answered when none is given.
pub use ftbudget_server::answers::DEFAULT_FIT_REGIMES;

#[derive(Args)]
pub struct FitArgs {
    /// A preset name (see `ftbudget presets`), a path to a model description, or a Hugging Face
    /// Hub id (org/name[@revision]); default minigpt, or the recipe's model
    #[arg(long)]
    pub model: Option<String>,
    /// With a Hub id: count parameters from the checkpoint's safetensors headers (fetched by
    /// HTTP range requests, never the weights) instead of config.json
    #[arg(long)]
    pub exact_from_hub: bool,
    /// GPU memory: a preset (rtx-3090, rtx-4090, l4, a100-40g, a100-80g, h100-80g, h200) or an
    /// exact size (24GiB, 80GB, 1.5TiB; GB is 10^9, GiB 2^30); with --tokens a preset, whose
    /// datasheet peak times the run
    #[arg(long)]
    pub gpu: String,
    /// Regime specs to answer for (default: full-ft, lora:r=8, qlora:r=8, dora:r=8)
    #[arg(long = "regime")]
    pub regimes: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: FitFormat,
    /// GPU memory kept free beyond the reserved estimate (cached free blocks, fragmentation),
    /// as a fraction (0.05) or a percentage (5%) of the GPU; a workload fits when its reserved
    /// estimate plus this margin is within the GPU's memory
    #[arg(long, default_value = "5%")]
    pub margin: FitMargin,
    #[command(flatten)]
    pub cuda: CudaArgs,
    // With --tokens (or --dataset-tokens): time and price a run at each regime's largest batch
    // that fits, on --gpu (then a preset with a datasheet peak).
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

pub fn run(args: FitArgs) -> Result<()> {
    let run = crate::recipe::resolve(
        &args.recipe,
        args.model.as_deref(),
        &args.regimes,
        &args.memory,
        DEFAULT_FIT_REGIMES,
    )?;
    let mut settings = run.settings;
    let gpu = parse_gpu(&args.gpu)?;
    let model = crate::args::load_model(
        &run.model,
        args.exact_from_hub,
        &mut settings,
        run.seq_given,
    )?;
    let registry = ftbudget_roster::registry()?;
    let specs = run.regimes;
    // The one code path the server's /api/fit also takes.
    let overhead = FitOverhead {
        cuda: args.cuda.cuda_context,
        margin: args.margin,
    };
    let timing = match args.timing.tokens()? {
        Some(tokens) => Some(FitTiming {
            timing: args.timing.timing(&args.gpu, &settings)?,
            tokens,
        }),
        None => None,
    };
    let report = ftbudget_server::answers::fit(
        &registry,
        &model,
        &specs,
        &settings,
        &gpu,
        &overhead,
        timing.as_ref(),
    )?;
    let text = match args.format {
        FitFormat::Json => serde_json::to_string_pretty(&report)?,
        FitFormat::Table => render(&report, &settings),
        FitFormat::Csv => render_csv(&report)?,
    };
    crate::output::emit(&text)
}

fn signed_binary(bytes: i128) -> String {
    let magnitude = u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX);
    if bytes < 0 {
        format!("-{}", units::binary(magnitude))
    } else {
        units::binary(magnitude)
    }
}

fn limit(l: &Option<Limit>, applies: bool) -> String {
    match (applies, l) {
        (false, _) => "n/a".into(),
        (true, None) => "none fits".into(),
        (true, Some(l)) => format!(
            "{}{} ({} free)",
            if l.capped { ">= " } else { "" },
            group_digits(l.value),
            units::binary(l.headroom_bytes)
        ),
    }
}

fn render(report: &FitReport, settings: &ftbudget_core::MemorySettings) -> String {
    let w = settings.workload;
    let mut out = format!(
        "{} on {} ({} = {} B per GPU{}), batch {}, seq {}, {}, {}\n",
        report.model,
        report.gpu,
        units::binary(report.capacity_bytes),
        group_digits(report.capacity_bytes),
        if report.gpus > 1 {
            format!(", {} GPUs, ZeRO-{}", report.gpus, report.zero_stage)
        } else {
            String::new()
        },
        w.batch,
        w.seq,
        settings.precision,
        settings.optimizer,
    );
    out.push_str(&format!(
        "fits: reserved (an estimate of what nvidia-smi shows: the step's peak in whole 2 MiB allocator segments + {} CUDA context) + a {} margin ({}) within the GPU's memory, i.e. a peak of at most {}\n",
        units::binary(report.cuda_context_bytes),
        report.margin,
        units::binary(report.margin_bytes),
        units::binary(report.peak_budget_bytes),
    ));
    let header = [
        "Regime".to_string(),
        "Total".into(),
        "Peak".into(),
        "Reserved (est.)".into(),
        "Fits".into(),
        "Headroom".into(),
        format!("Max batch (seq {})", w.seq),
        format!("Max seq (batch {})", w.batch),
        "Max rank".into(),
    ];
    let rows: Vec<[String; 9]> = report
        .answers
        .iter()
        .map(|row| {
            let a = &row.answer;
            [
                a.label.clone(),
                units::binary(a.total_bytes),
                format!("{} ({})", units::binary(a.peak_bytes), a.peak_phase),
                units::binary(row.reserved.bytes),
                if a.fits { "yes" } else { "no" }.into(),
                signed_binary(a.headroom_bytes),
                limit(&a.max_batch, true),
                limit(&a.max_seq, true),
                limit(&a.max_rank, a.has_rank),
            ]
        })
        .collect();
    // Regime and Fits read left-aligned, the figures right-aligned.
    out.push_str(&columns(header, &rows, &[0, 4]));
    if let Some(t) = &report.timing {
        out.push_str(&render_time(report, t));
    }
    out
}

/// Cells laid out in columns, those in `left` left-aligned, the others right-aligned.
fn columns<const N: usize>(header: [String; N], rows: &[[String; N]], left: &[usize]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String; N]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i] - c.chars().count());
            if left.contains(&i) {
                s.push_str(c);
                s.push_str(&pad);
            } else {
                s.push_str(&pad);
                s.push_str(c);
            }
            s.push_str("  ");
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// The run at each regime's largest batch: step FLOPs, tokens per step, step and wall time,
/// GPU-hours and cost.
fn render_time(report: &FitReport, t: &FitTiming) -> String {
    use super::cost::{group_digits_u128, hours, si_flops, timing_statement};
    let timing = &t.timing;
    let mut out = format!(
        "\ntime at the largest batch that fits, {} tokens on {} x {}: {}\n",
        group_digits_u128(t.tokens),
        timing.gpus,
        timing.gpu,
        timing_statement(timing),
    );
    let header = [
        "Regime".to_string(),
        "Batch".into(),
        "Step FLOPs".into(),
        "Tokens/step".into(),
        "Step time".into(),
        "Steps".into(),
        "Wall time".into(),
        "GPU-hours".into(),
        "Cost".into(),
    ];
    let rows: Vec<[String; 9]> = report
        .answers
        .iter()
        .map(|row| {
            let label = row.answer.label.clone();
            match &row.time_at_max_batch {
                None => [
                    label,
                    "none fits".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                Some(at) => [
                    label,
                    format!("{}{}", if at.capped { ">= " } else { "" }, at.batch),
                    si_flops(at.flops.step),
                    group_digits_u128(at.run.tokens_per_step),
                    format!("{:.3} s", at.run.step_seconds),
                    group_digits_u128(at.run.steps),
                    hours(at.run.seconds / 3600.0),
                    format!("{:.1}", at.run.gpu_hours),
                    at.run.cost.map_or("-".into(), |c| format!("{c:.2}")),
                ],
            }
        })
        .collect();
    out.push_str(&columns(header, &rows, &[0]));
    out
}

/// One CSV line per regime: the fit answer and, with a token count, the run at its largest batch.
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    model: &'a str,
    gpu: &'a str,
    regime: &'a str,
    label: &'a str,
    batch: u64,
    seq: u64,
    gpus: u64,
    capacity_bytes: u64,
    peak_budget_bytes: u64,
    total_bytes: u64,
    peak_bytes: u64,
    reserved_bytes: u64,
    fits: bool,
    headroom_bytes: i128,
    max_batch: Option<u64>,
    max_seq: Option<u64>,
    max_rank: Option<u64>,
    tokens: Option<u128>,
    mfu: Option<f64>,
    peak_flops_per_gpu: Option<u64>,
    time_batch: Option<u64>,
    time_flops_step: Option<u128>,
    time_tokens_per_step: Option<u128>,
    time_step_seconds: Option<f64>,
    time_steps: Option<u128>,
    time_seconds: Option<f64>,
    time_gpu_hours: Option<f64>,
    time_cost: Option<f64>,
}

fn render_csv(report: &FitReport) -> Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let t = report.timing.as_ref();
    for row in &report.answers {
        let a = &row.answer;
        let at = row.time_at_max_batch.as_ref();
        writer.serialize(CsvRow {
            model: &report.model,
            gpu: &report.gpu,
            regime: &a.regime,
            label: &a.label,
            batch: a.workload.batch,
            seq: a.workload.seq,
            gpus: report.gpus,
            capacity_bytes: report.capacity_bytes,
            peak_budget_bytes: report.peak_budget_bytes,
            total_bytes: a.total_bytes,
            peak_bytes: a.peak_bytes,
            reserved_bytes: row.reserved.bytes,
            fits: a.fits,
            headroom_bytes: a.headroom_bytes,
            max_batch: a.max_batch.map(|l| l.value),
            max_seq: a.max_seq.map(|l| l.value),
            max_rank: a.max_rank.map(|l| l.value),
            tokens: t.map(|t| t.tokens),
            mfu: t.map(|t| t.timing.mfu),
            peak_flops_per_gpu: t.map(|t| t.timing.peak_flops_per_gpu),
            time_batch: at.map(|x| x.batch),
            time_flops_step: at.map(|x| x.flops.step),
            time_tokens_per_step: at.map(|x| x.run.tokens_per_step),
            time_step_seconds: at.map(|x| x.run.step_seconds),
            time_steps: at.map(|x| x.run.steps),
            time_seconds: at.map(|x| x.run.seconds),
            time_gpu_hours: at.map(|x| x.run.gpu_hours),
            time_cost: at.and_then(|x| x.run.cost),
        })?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

//! `ftbudget fit`: for each regime, does the workload fit on this GPU, and what are the largest
//! batch, sequence length and LoRA rank that fit (solved exactly by crates/sweep).

use crate::args::{CudaArgs, MemoryArgs};
use crate::recipe::RecipeArgs;
use anyhow::Result;
use clap::{Args, ValueEnum};
use ftbudget_core::FitMargin;
use ftbudget_report::{group_digits, units};
use ftbudget_server::answers::{FitOverhead, FitReport};
use ftbudget_sweep::{Limit, parse_gpu};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FitFormat {
    Table,
    Json,
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
    /// exact size (24GiB, 80GB, 1.5TiB; GB is 10^9, GiB 2^30)
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
    let report =
        ftbudget_server::answers::fit(&registry, &model, &specs, &settings, &gpu, &overhead)?;
    let text = match args.format {
        FitFormat::Json => serde_json::to_string_pretty(&report)?,
        FitFormat::Table => render(&report, &settings),
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
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i == 0 || i == 4 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
            s.push_str("  ");
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&header));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

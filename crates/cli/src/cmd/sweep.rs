//! `ftbudget sweep`: one row per (width, layers, rank, batch, seq) point, as CSV or JSON lines.
//! Every range is checked and every shape built before the first row; rows are computed on all
//! cores (crates/sweep) and written in order. A progress bar appears on stderr only when the sweep
//! runs longer than a second and stderr is a terminal.

use crate::args::{MAX_BATCH, MAX_SEQ, MemoryArgs, TimingArgs};
use crate::output::{Stdout, Stop};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ftbudget_core::RegimeSpec;
use ftbudget_core::Workload;
use ftbudget_report::export::{
    ParamCounts, RegimeColumns, RowFormat, RowRecord, RunColumns, TimeColumns, write_rows,
};
use ftbudget_report::{ModelSummary, ReportError};
use ftbudget_sweep::{
    Grid, MAX_RANK, MAX_SHAPES, RegimePoint, Row, ScaledShape, SweepError, Timing,
    grid::checked_points, parse_values, spec_with_rank, timing::DEFAULT_TIMING_GPU,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SweepFormat {
    Csv,
    Jsonl,
}

/// The largest width and layer count a sweep accepts.
pub const MAX_WIDTH: u64 = 1 << 20;
pub const MAX_LAYERS: u64 = 1 << 12;

/// Axes are lists: `8`, `1,2,4`, `1,2,4,...,1024` (continues the progression), `64..16384`
/// (doubling), `1..64:+1` (step), `1..1000:*10` (factor).
#[derive(Args)]
#[command(
    after_help = "Lists: 8 | 1,2,4 | 1,2,4,...,1024 (continues the progression) | 64..16384 (doubling) | 1..64:+1 (step) | 1..1000:*10 (factor).\nWidths keep the head dimension (heads = width / head_dim), the kv-head group and the MLP ratio (rounded up to 256 for LLaMA-style families).",
    mut_arg("batch", |a| a.long("workload-batch").hide(true)),
    mut_arg("seq", |a| a.long("workload-seq").hide(true))
)]
pub struct SweepArgs {
    /// A preset name (widths and layers scale its family) or a path to a model description
    #[arg(long, default_value = "minigpt")]
    pub model: String,
    /// The regime spec; its rank is set from --ranks (e.g. lora, qlora:double_quant=true, full-ft)
    #[arg(long, default_value = "lora")]
    pub regime: String,
    /// LoRA ranks (default: the spec's r)
    #[arg(long, value_name = "LIST")]
    pub ranks: Option<String>,
    /// Hidden sizes; heads, kv heads and the MLP width follow the family's ratios (default: the
    /// model's)
    #[arg(long, value_name = "LIST")]
    pub widths: Option<String>,
    /// Layer counts (default: the model's)
    #[arg(long, value_name = "LIST")]
    pub layers: Option<String>,
    /// Micro-batch sizes per GPU (default: the conventions')
    #[arg(long = "batch", id = "batch_values", value_name = "LIST")]
    pub batches: Option<String>,
    /// Sequence lengths (default: the conventions')
    #[arg(long = "seq", id = "seq_values", value_name = "LIST")]
    pub seqs: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: SweepFormat,
    /// The GPU preset each step is timed on (its datasheet peak x --mfu): the step_seconds
    /// column, and with --tokens wall_hours, gpu_hours and (with --price-per-gpu-hour) cost
    #[arg(long, default_value = DEFAULT_TIMING_GPU)]
    pub gpu: String,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
}

fn axis(flag: &'static str, text: &Option<String>, default: u64, max: u64) -> Result<Vec<u64>> {
    Ok(match text {
        None => vec![default],
        Some(t) => parse_values(flag, t, max)?,
    })
}

/// Build the grid: every check happens here, before any row is computed.
pub fn build_grid(args: &SweepArgs) -> Result<Grid> {
    let settings = args.memory.settings()?;
    let registry = ftbudget_roster::registry()?;
    let regime_flag = || format!("--regime {}", args.regime);
    let spec: RegimeSpec = args.regime.parse().with_context(regime_flag)?;
    let registration = registry.get(&spec.name).with_context(regime_flag)?;
    let rank_option = registration.rank_doc();
    let given_rank = rank_option.and_then(|doc| spec.options.iter().find(|(k, _)| k == doc.key));
    let ranks: Vec<Option<u64>> = match (&args.ranks, rank_option) {
        (Some(_), None) => bail!("--ranks: regime `{}` has no rank", spec.name),
        (Some(_), Some(_)) if given_rank.is_some() => {
            bail!(
                "--ranks: the spec `{}` already sets {}; give the ranks in one place",
                args.regime,
                registration.rank_option.unwrap_or("the rank")
            )
        }
        (Some(text), Some(_)) => parse_values("--ranks", text, MAX_RANK)?
            .into_iter()
            .map(Some)
            .collect(),
        (None, None) => vec![None],
        (None, Some(doc)) => {
            let r = given_rank.map(|(_, v)| v.as_str()).unwrap_or(doc.default);
            vec![r.parse().ok()]
        }
    };

    let base = ftbudget_models::presets::spec(&args.model);
    let (widths, layers, batches, seqs);
    let shapes = match &base {
        Some(base) => {
            widths = axis("--widths", &args.widths, base.hidden, MAX_WIDTH)?;
            layers = axis("--layers", &args.layers, base.layers, MAX_LAYERS)?;
            batches = axis("--batch", &args.batches, settings.workload.batch, MAX_BATCH)?;
            seqs = axis("--seq", &args.seqs, settings.workload.seq, MAX_SEQ)?;
            let shapes = widths.len() as u128 * layers.len() as u128;
            if shapes > u128::from(MAX_SHAPES) {
                return Err(SweepError::TooManyShapes {
                    shapes,
                    limit: MAX_SHAPES,
                }
                .into());
            }
            checked_points(&[
                shapes as u64,
                ranks.len() as u64,
                batches.len() as u64,
                seqs.len() as u64,
            ])?;
            let mut out = Vec::with_capacity(shapes as usize);
            for &w in &widths {
                for &l in &layers {
                    out.push(ScaledShape::build(base, w, l)?);
                }
            }
            out
        }
        None => {
            if args.widths.is_some() || args.layers.is_some() {
                bail!(
                    "--widths/--layers: `{}` is not a preset, so there is no family to scale",
                    args.model
                );
            }
            let (shape, notes) = crate::model_source::load(&args.model, false)?;
            for line in notes {
                eprintln!("{line}");
            }
            batches = axis("--batch", &args.batches, settings.workload.batch, MAX_BATCH)?;
            seqs = axis("--seq", &args.seqs, settings.workload.seq, MAX_SEQ)?;
            vec![ScaledShape {
                width: shape.dims.hidden,
                layers: shape.dims.layers,
                shape,
            }]
        }
    };
    let regimes = ranks
        .iter()
        .map(|&rank| {
            let text = match rank {
                Some(r) if args.ranks.is_some() => {
                    // `--ranks` was accepted above only for a regime with a rank option.
                    let option = registration.rank_option.unwrap_or_default();
                    spec_with_rank(&args.regime, option, r).with_context(regime_flag)?
                }
                _ => args.regime.clone(),
            };
            Ok(RegimePoint {
                rank,
                regime: registry.build(&text).with_context(regime_flag)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Plan every (shape, regime) pair once up front: an adapter that cannot apply to some shape is
    // an error before any output.
    let longest = seqs.iter().copied().max().unwrap_or(0);
    for s in &shapes {
        s.shape.check_seq("--seq", longest)?;
        for r in &regimes {
            r.regime.plan(&s.shape).with_context(regime_flag)?;
        }
    }
    Ok(Grid::new(shapes, regimes, batches, seqs, settings)?)
}

/// Per-shape and per-regime columns, built once; rows borrow them.
struct Columns {
    shapes: Vec<(ModelSummary, u64)>,
    regimes: Vec<RegimeColumns>,
    timing: Timing,
    tokens: Option<u128>,
}

impl Columns {
    fn new(grid: &Grid, timing: Timing, tokens: Option<u128>) -> Self {
        Columns {
            timing,
            tokens,
            shapes: grid
                .shapes
                .iter()
                .map(|s| (ModelSummary::of(&s.shape), s.shape.total_params()))
                .collect(),
            regimes: grid
                .regimes
                .iter()
                .map(|r| RegimeColumns::new(r.regime.spec(), r.regime.label()))
                .collect(),
        }
    }

    /// The rows of one chunk in `format`; the chunk holding point 0 starts with the CSV header.
    fn render(&self, format: RowFormat, rows: &[Row]) -> Result<Vec<u8>, ReportError> {
        let mut out = Vec::with_capacity(rows.len() * 320);
        let header = rows.first().is_some_and(|r| r.index == 0);
        let records = rows.iter().map(|row| {
            let (model, base_params) = &self.shapes[row.shape];
            let e = &row.estimate;
            let params = ParamCounts {
                base: *base_params,
                trainable: e.trainable_params,
                frozen: e.frozen_params,
                all: e.all_params,
            };
            let workload = Workload {
                batch: row.batch,
                seq: row.seq,
            };
            RowRecord::new(
                model,
                &self.regimes[row.regime],
                workload,
                params,
                &e.memory,
            )
            .with_flops(&e.flops)
            .with_time(&self.time(&e.flops, workload))
        });
        write_rows(format, header, records, &mut out)?;
        Ok(out)
    }
}

impl Columns {
    /// A row's time columns from the shared timing (`ftbudget_sweep::timing`).
    fn time(&self, flops: &ftbudget_core::StepFlops, w: Workload) -> TimeColumns<'_> {
        let t = &self.timing;
        let run = self.tokens.and_then(|tokens| {
            let run = t.run(flops, w.batch.checked_mul(w.seq)?, tokens)?;
            Some(RunColumns {
                tokens,
                wall_hours: run.seconds / 3600.0,
                gpu_hours: run.gpu_hours,
                cost: run.cost,
            })
        });
        TimeColumns {
            gpu: t.gpu,
            mfu: t.mfu,
            step_seconds: t.step_seconds(flops),
            run,
        }
    }
}

/// Points per chunk handed to one worker.
const CHUNK: u64 = 8192;

pub fn run(args: SweepArgs) -> Result<()> {
    let grid = build_grid(&args)?;
    let timing = args.timing.timing(&args.gpu, &grid.settings)?;
    let columns = Columns::new(&grid, timing, args.timing.tokens()?);
    let format = match args.format {
        SweepFormat::Csv => RowFormat::Csv,
        SweepFormat::Jsonl => RowFormat::Jsonl,
    };
    let mut out = Stdout::new();
    let bar = ProgressBar::with_draw_target(Some(grid.len()), ProgressDrawTarget::hidden());
    let show_bar = io::stderr().is_terminal();
    let started = Instant::now();
    let mut shown = false;
    let result = grid
        .run(
            CHUNK,
            |_, rows| columns.render(format, rows),
            |bytes, done| {
                out.write(&bytes.map_err(|e| Stop::Failed(e.into()))?)?;
                if show_bar && !shown && started.elapsed() > Duration::from_secs(1) {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{bar:40} {pos}/{len} points, {per_sec}, eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    shown = true;
                }
                bar.set_position(done);
                Ok::<(), Stop>(())
            },
        )
        .and_then(|()| out.finish());
    bar.finish_and_clear();
    crate::output::ended(result)
}

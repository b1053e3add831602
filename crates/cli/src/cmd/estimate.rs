use crate::args::{CudaArgs, MemoryArgs};
use crate::recipe::RecipeArgs;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ftbudget_core::{MemorySettings, ModelShape, Registry};
use ftbudget_report::export::RowFormat;
use ftbudget_report::timeline::{step_timelines, timeline_png};
use ftbudget_report::{TableStyle, render_rows, render_table};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Markdown,
    Json,
    /// One row per regime, the columns `ftbudget sweep` writes
    Csv,
    /// The CSV columns as one JSON object per line
    Jsonl,
}

/// The seed lab's six regimes, the default comparison.
pub use ftbudget_server::answers::DEFAULT_REGIMES;

#[derive(Args)]
pub struct EstimateArgs {
    /// A preset name (see `ftbudget presets`), a path to a config.json / safetensors model, or a
    /// Hugging Face Hub id (org/name[@revision]: the Hugging Face cache first, else config.json);
    /// default minigpt, or the recipe's model
    #[arg(long)]
    pub model: Option<String>,
    /// With a Hub id: count parameters from the checkpoint's safetensors headers (fetched by
    /// HTTP range requests, never the weights) instead of config.json
    #[arg(long)]
    pub exact_from_hub: bool,
    /// Regime specs, e.g. full-ft, lora:r=8, lora:r=16,targets=q_proj+v_proj, qlora:r=8,double_quant=true;
    /// the first is the baseline of the ratio column
    #[arg(long = "regime")]
    pub regimes: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Also draw live memory through the first and a steady step, per regime, stacked by
    /// category with the peak marked, as a PNG at this path
    #[arg(long, value_name = "PNG")]
    pub timeline: Option<PathBuf>,
    #[command(flatten)]
    pub cuda: CudaArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

pub fn run(args: EstimateArgs) -> Result<()> {
    let run = crate::recipe::resolve(
        &args.recipe,
        args.model.as_deref(),
        &args.regimes,
        &args.memory,
        DEFAULT_REGIMES,
    )?;
    let mut settings = run.settings;
    let model = crate::args::load_model(
        &run.model,
        args.exact_from_hub,
        &mut settings,
        run.seq_given,
    )?;
    let registry = ftbudget_roster::registry()?;
    let specs = run.regimes;
    // The one code path the server's /api/estimate also takes.
    let cmp = ftbudget_server::answers::comparison(
        &registry,
        &model,
        &specs,
        &settings,
        &args.cuda.cuda_context,
    )?;
    if let Some(path) = &args.timeline {
        write_timeline(path, &registry, &model, &specs, &settings)
            .with_context(|| format!("--timeline {}", path.display()))?;
        eprintln!("timeline: {} written", path.display());
    }
    let baseline = cmp.rows[0].label.clone();
    let out = match args.format {
        Format::Table => render_table(&cmp, TableStyle::Terminal, &baseline),
        Format::Markdown => render_table(&cmp, TableStyle::Markdown, &baseline),
        Format::Json => ftbudget_server::answers::comparison_json(&cmp, &settings),
        Format::Csv => render_rows(&cmp, settings.workload, RowFormat::Csv)?,
        Format::Jsonl => render_rows(&cmp, settings.workload, RowFormat::Jsonl)?,
    };
    crate::output::emit(&out)
}

/// Draw the step timeline of every regime and write it to `path` whole: into a temporary file
/// beside it, then renamed, so a failure leaves nothing half-written.
fn write_timeline(
    path: &Path,
    registry: &Registry,
    model: &ModelShape,
    specs: &[String],
    settings: &MemorySettings,
) -> Result<()> {
    let regimes = ftbudget_server::answers::regimes(registry, model, specs)?;
    let timelines = step_timelines(model, &regimes, settings)?;
    let w = settings.workload;
    let title = format!(
        "{}: live memory through the step (batch {}, seq {}, {})",
        model.name, w.batch, w.seq, settings.precision
    );
    let png = timeline_png(&title, &timelines)?;
    write_whole(path, &png)
}

/// `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("not a file path"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(())
}

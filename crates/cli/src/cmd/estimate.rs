use crate::args::MemoryArgs;
use crate::recipe::RecipeArgs;
use anyhow::Result;
use clap::{Args, ValueEnum};
use ftbudget_report::export::RowFormat;
use ftbudget_report::{TableStyle, render_rows, render_table};

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
    let cmp = ftbudget_server::answers::comparison(&registry, &model, &specs, &settings)?;
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

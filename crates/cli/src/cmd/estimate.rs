use crate::args::MemoryArgs;
use crate::recipe::{RecipeArgs, SettingsEcho};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ftbudget_report::export::RowFormat;
use ftbudget_report::{TableStyle, compare, render_json, render_rows, render_table};

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
pub const DEFAULT_REGIMES: &[&str] = &[
    "full-ft",
    "lora:r=4",
    "lora:r=8",
    "lora:r=16",
    "qlora:r=8",
    "dora:r=8",
];

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

/// Build `spec` and plan it on `model`, so that a regime the model cannot take is an error that
/// names its `--regime`.
fn checked_regime(
    registry: &ftbudget_core::Registry,
    model: &ftbudget_core::ModelShape,
    spec: &str,
) -> Result<Box<dyn ftbudget_core::Regime>> {
    let regime = registry.build(spec)?;
    regime.plan(model)?;
    Ok(regime)
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
    let regimes = specs
        .iter()
        .map(|s| checked_regime(&registry, &model, s).with_context(|| format!("--regime {s}")))
        .collect::<Result<Vec<_>>>()?;
    let cmp = compare(&model, &regimes, &settings)?;
    let baseline = cmp.rows[0].label.clone();
    let out = match args.format {
        Format::Table => render_table(&cmp, TableStyle::Terminal, &baseline),
        Format::Markdown => render_table(&cmp, TableStyle::Markdown, &baseline),
        Format::Json => crate::recipe::with_settings(
            &render_json(&cmp),
            &SettingsEcho::of(&settings, run.grad_accum),
        )?,
        Format::Csv => render_rows(&cmp, settings.workload, RowFormat::Csv)?,
        Format::Jsonl => render_rows(&cmp, settings.workload, RowFormat::Jsonl)?,
    };
    crate::output::emit(&out)
}

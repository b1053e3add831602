//! `--recipe FILE` (and `--recipe-format`): a training recipe read by `ftbudget_recipes` gives
//! the model, the regime and the memory settings; every flag given explicitly overrides it. Also
//! the `settings` object the JSON outputs echo, spelled as the flags take each value.

use crate::args::MemoryArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use ftbudget_core::MemorySettings;
use ftbudget_recipes::{Recipe, RecipeFormat};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// A training recipe: an axolotl, LLaMA-Factory or torchtune YAML, TRL / TrainingArguments
    /// JSON, or a peft adapter_config.json. It gives the model, the regime and the settings;
    /// flags given explicitly override it
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Force the recipe format: axolotl | llama-factory | torchtune | trl | peft
    #[arg(long, requires = "recipe")]
    pub recipe_format: Option<RecipeFormat>,
}

/// What one run estimates: from flags alone, or from a recipe with flags on top.
pub struct Resolved {
    pub model: String,
    pub regimes: Vec<String>,
    pub settings: MemorySettings,
    /// The sequence length was set explicitly (a flag or the recipe): a model's shorter
    /// position table is then an error, not a silent cut.
    pub seq_given: bool,
}

/// Sequence-length keys of the recipe formats.
const SEQ_KEYS: &[&str] = &[
    "sequence_len",
    "cutoff_len",
    "tokenizer.max_seq_len",
    "max_length",
    "max_seq_length",
];

pub fn resolve(
    recipe_args: &RecipeArgs,
    model_flag: Option<&str>,
    regime_flags: &[String],
    memory: &MemoryArgs,
    default_regimes: &[&str],
) -> Result<Resolved> {
    let Some(path) = &recipe_args.recipe else {
        return Ok(Resolved {
            model: model_flag.unwrap_or("minigpt").to_string(),
            regimes: crate::args::regime_specs(regime_flags, default_regimes),
            settings: memory.settings()?,
            seq_given: memory.seq.is_some(),
        });
    };
    let recipe = ftbudget_recipes::read_recipe(path, recipe_args.recipe_format)?;
    report(path, &recipe);
    let settings = memory.on(recipe.settings.clone()).context("--recipe")?;
    let model = match (model_flag, &recipe.model) {
        (Some(m), _) => m.to_string(),
        (None, Some(m)) => m.clone(),
        (None, None) => bail!(
            "--recipe {}: the recipe names no model ftbudget can read: pass --model",
            path.display()
        ),
    };
    let regimes = if regime_flags.is_empty() {
        vec![recipe.regime.clone()]
    } else {
        regime_flags.to_vec()
    };
    let seq_given = memory.seq.is_some()
        || recipe
            .read
            .iter()
            .any(|(k, _)| SEQ_KEYS.contains(&k.as_str()));
    Ok(Resolved {
        model,
        regimes,
        settings,
        seq_given,
    })
}

/// What was read, the defaults applied and every key not modelled, on stderr (stdout stays
/// the table or the JSON).
fn report(path: &std::path::Path, r: &Recipe) {
    eprintln!(
        "recipe: {} ({}): model {}, regime {}",
        path.display(),
        r.format,
        r.model.as_deref().unwrap_or("(none: pass --model)"),
        r.regime
    );
    let read: Vec<String> = r.read.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("recipe read: {}", read.join(", "));
    for note in &r.notes {
        eprintln!("recipe default: {note}");
    }
    for u in &r.unmodelled {
        eprintln!(
            "recipe key not modelled: `{}` = {}: {}",
            u.key, u.value, u.why
        );
    }
}

//! peft's `adapter_config.json` (a published LoRA adapter). It holds the adapter only: the base
//! model's shape comes from `base_model_name_or_path` (or `--model`), the memory settings are
//! ftbudget's defaults. Defaults are `peft.LoraConfig`'s (peft 0.21.2): r 8, bias none,
//! target_modules None (peft's defaults for the model type).

use crate::common::{AdapterChoice, PEFT_DEFAULT_TARGETS, finish};
use crate::doc::Doc;
use crate::{Recipe, RecipeError, RecipeFormat};
use ftbudget_core::MemorySettings;

pub(crate) fn read(doc: &mut Doc<'_>) -> Result<Recipe, RecipeError> {
    let peft_type = doc.string("peft_type")?.unwrap_or_default();
    if peft_type != "LORA" {
        return Err(RecipeError::Invalid {
            key: "peft_type".into(),
            value: peft_type,
            expected: "LORA (the adapter types ftbudget reads from adapter_config.json)".into(),
        });
    }
    let model = doc.string("base_model_name_or_path")?;
    let rank = doc.uint("r")?.unwrap_or(8);
    let targets = match doc.raw("target_modules") {
        None => {
            doc.note("target_modules null: peft's default targets (q_proj, v_proj)");
            PEFT_DEFAULT_TARGETS.to_string()
        }
        Some(serde_json::Value::String(s)) if s == "all-linear" => {
            doc.list("target_modules", false)?;
            "all-linear".to_string()
        }
        Some(serde_json::Value::String(s)) => {
            return Err(RecipeError::Invalid {
                key: "target_modules".into(),
                value: s.clone(),
                expected:
                    "a list of module names or all-linear (a regular expression is not modelled)"
                        .into(),
            });
        }
        Some(_) => doc
            .list("target_modules", false)?
            .unwrap_or_default()
            .join("+"),
    };
    let mut choice = AdapterChoice::lora(rank, targets);
    if let AdapterChoice::Lora {
        modules_to_save,
        bias,
        lora_bias,
        dora,
        layers,
        rank_pattern,
        ..
    } = &mut choice
    {
        *modules_to_save = doc.list("modules_to_save", false)?.unwrap_or_default();
        *bias = doc.string("bias")?.unwrap_or_else(|| "none".into());
        *lora_bias = doc.flag("lora_bias")?.unwrap_or(false);
        *dora = doc.flag("use_dora")?.unwrap_or(false);
        *layers = doc.layers("layers_to_transform")?;
        *rank_pattern = doc.ranks("rank_pattern")?;
        doc.ranks("alpha_pattern")?; // scaling only: no parameter
    }
    if let Some(p) = doc.raw("layers_pattern") {
        let p = crate::doc::shown(p);
        if p != "layers" && p != "[\"layers\"]" {
            doc.unmodelled(
                "layers_pattern",
                &p,
                "ftbudget counts layers in the model's own layer list",
            );
        }
    }
    let keys: &[(&str, &str)] = &[
        (
            "exclude_modules",
            "excluded modules not modelled: counts include them",
        ),
        ("layer_replication", "layer replication not modelled"),
        ("target_parameters", "target_parameters not modelled"),
        (
            "trainable_token_indices",
            "trainable token rows not modelled",
        ),
    ];
    for (k, why) in keys {
        if doc.set(k).is_some() {
            return Err(RecipeError::Invalid {
                key: (*k).into(),
                value: crate::doc::shown(doc.raw(k).unwrap_or(&serde_json::Value::Null)),
                expected: format!("null: {why}"),
            });
        }
    }
    doc.unmodelled_if_set(
        "lora_dropout",
        "lora_dropout masks are not modelled on their own",
    );
    doc.note(
        "adapter_config.json holds no training settings: ftbudget's defaults (flags override)",
    );
    Ok(finish(
        doc,
        RecipeFormat::Peft,
        model,
        &choice,
        MemorySettings::pytorch(),
        1,
    ))
}

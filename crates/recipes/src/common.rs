//! What the formats share: the adapter a recipe asks for, as a regime spec; Hugging Face
//! optimizer and attention names; DeepSpeed ZeRO stages.

use crate::doc::Doc;
use crate::{Recipe, RecipeError, RecipeFormat};
use ftbudget_core::{AttentionImpl, Checkpointing, MemorySettings, Optimizer};

/// The trained part of a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterChoice {
    Full,
    Lora {
        rank: u64,
        /// Spec text for `targets=` (`all-linear`, `q_proj+v_proj`).
        targets: String,
        modules_to_save: Vec<String>,
        bias: String,
        lora_bias: bool,
        dora: bool,
        /// `Some(double_quant)`: a bitsandbytes 4-bit NF4 base (QLoRA).
        nf4: Option<bool>,
        /// The tool runs peft's `prepare_model_for_kbit_training` on the 4-bit base (axolotl):
        /// the `qlora` regime's default `prepare=true`; `prepare=false` otherwise.
        kbit_prepared: bool,
        /// An 8-bit base (bitsandbytes LLM.int8).
        int8: bool,
        layers: Option<Vec<u64>>,
        rank_pattern: Vec<(String, u64)>,
    },
}

/// peft's default targets for LLaMA-style models (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`
/// in peft/utils/constants.py: llama, mistral, qwen2, gemma, ... map to `["q_proj", "v_proj"]`).
pub const PEFT_DEFAULT_TARGETS: &str = "q_proj+v_proj";

impl AdapterChoice {
    /// A plain LoRA of `rank` on `targets`, everything else at peft's defaults.
    pub fn lora(rank: u64, targets: String) -> Self {
        AdapterChoice::Lora {
            rank,
            targets,
            modules_to_save: Vec::new(),
            bias: "none".into(),
            lora_bias: false,
            dora: false,
            nf4: None,
            kbit_prepared: false,
            int8: false,
            layers: None,
            rank_pattern: Vec::new(),
        }
    }

    /// The regime spec ftbudget builds.
    pub fn spec(&self) -> String {
        let AdapterChoice::Lora {
            rank,
            targets,
            modules_to_save,
            bias,
            lora_bias,
            dora,
            nf4,
            kbit_prepared,
            int8,
            layers,
            rank_pattern,
        } = self
        else {
            return "full-ft".into();
        };
        let name = match (nf4, dora) {
            (Some(_), _) => "qlora",
            (None, true) => "dora",
            (None, false) => "lora",
        };
        let mut opts = vec![format!("r={rank}"), format!("targets={targets}")];
        if bias != "none" {
            opts.push(format!("bias={bias}"));
        }
        if !modules_to_save.is_empty() {
            opts.push(format!("modules_to_save={}", modules_to_save.join("+")));
        }
        if *lora_bias {
            opts.push("lora_bias=true".into());
        }
        if let Some(layers) = layers {
            let l: Vec<String> = layers.iter().map(u64::to_string).collect();
            opts.push(format!("layers={}", l.join("+")));
        }
        if !rank_pattern.is_empty() {
            let p: Vec<String> = rank_pattern
                .iter()
                .map(|(k, r)| format!("{k}:{r}"))
                .collect();
            opts.push(format!("rank_pattern={}", p.join("+")));
        }
        if *int8 {
            opts.push("base=int8".into());
        }
        if *nf4 == Some(true) {
            opts.push("double_quant=true".into());
        }
        if nf4.is_some() && !kbit_prepared {
            opts.push("prepare=false".into());
        }
        format!("{name}:{}", opts.join(","))
    }

    pub fn quantized(&self) -> bool {
        matches!(
            self,
            AdapterChoice::Lora { nf4: Some(_), .. } | AdapterChoice::Lora { int8: true, .. }
        )
    }

    pub fn is_full(&self) -> bool {
        matches!(self, AdapterChoice::Full)
    }
}

/// A Hugging Face `TrainingArguments.optim` name (transformers' `OptimizerNames`, the names
/// axolotl, LLaMA-Factory and TRL pass through) as ftbudget's optimizer, and whether it keeps a
/// `step` tensor per parameter (torch's optimizers do; bitsandbytes keeps `state["step"]` as a
/// Python int, bitsandbytes/optim/optimizer.py).
pub fn hf_optimizer(key: &str, name: &str) -> Result<(Optimizer, bool), RecipeError> {
    Ok(match name {
        "adamw_torch_4bit" => {
            return Err(RecipeError::Invalid {
                key: key.into(),
                value: name.into(),
                expected: "an optimizer ftbudget models: 4-bit AdamW state is not modelled".into(),
            });
        }
        // torch.optim.AdamW(fused=True) and the other one-kernel AdamWs: updated in place, no
        // step temporaries.
        "adamw_torch_fused" | "adamw_apex_fused" | "adamw_torch_npu_fused" => {
            (Optimizer::AdamWFused, true)
        }
        // torch.optim.AdamW with its default (foreach) step.
        "adamw_torch" | "adamw_hf" | "adamw_torch_xla" | "adamw" | "adam" => {
            (Optimizer::AdamW, true)
        }
        // bitsandbytes' 32-bit AdamW: fp32 states like torch's, no step tensor, updated in place
        // by one kernel per tensor (optimizer_update_32bit). Paging moves the state to CPU only
        // under memory pressure: its bytes stay.
        "paged_adamw_32bit" | "paged_adamw" | "adamw_bnb_32bit" => (Optimizer::AdamWFused, false),
        "adamw_bnb_8bit" | "adamw_8bit" | "paged_adamw_8bit" | "bnb_8bit" => {
            (Optimizer::AdamW8bit, false)
        }
        // torch.optim.SGD with transformers' defaults: momentum 0, no state.
        "sgd" => (Optimizer::Sgd, false),
        other => {
            return Err(RecipeError::Invalid {
                key: key.into(),
                value: other.into(),
                expected: "an optimizer ftbudget models: adamw_torch, adamw_torch_fused, adamw_hf, paged_adamw_32bit, adamw_bnb_8bit, adamw_8bit, paged_adamw_8bit or sgd".into(),
            });
        }
    })
}

/// A transformers `attn_implementation` as ftbudget's attention; `None` for one not modelled.
pub fn hf_attention(name: &str) -> Option<AttentionImpl> {
    match name {
        "eager" => Some(AttentionImpl::Eager),
        "sdpa" => Some(AttentionImpl::Sdpa),
        "flash_attention_2" | "flash_attention_3" | "flash" | "fa2" => Some(AttentionImpl::Flash),
        _ => None,
    }
}

/// Read `attn_implementation`-style `key` into `settings`, or report it.
pub fn read_attention(
    doc: &mut Doc<'_>,
    key: &str,
    settings: &mut MemorySettings,
) -> Result<(), RecipeError> {
    if let Some(name) = doc.string(key)? {
        match hf_attention(&name) {
            Some(a) => settings.activations.attention = a,
            None => doc.unmodelled(
                key,
                &name,
                "attention kernel not modelled: sdpa's figures stand in",
            ),
        }
    }
    Ok(())
}

/// The ZeRO stage of a DeepSpeed config `key` names: a file (relative to the recipe) or an
/// inline mapping. A file that is not there is looked up by name (`zero3.json`, `ds_z2_config.json`).
pub fn read_deepspeed(
    doc: &mut Doc<'_>,
    key: &str,
    settings: &mut MemorySettings,
) -> Result<(), RecipeError> {
    let Some(v) = doc.raw(key) else {
        return Ok(());
    };
    let config = match v {
        serde_json::Value::Object(_) => Some(v.clone()),
        serde_json::Value::String(file) => {
            let path = doc.resolve(file);
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        }
        _ => None,
    };
    let shown = crate::doc::shown(v);
    doc.read.push((key.to_string(), shown.clone()));
    let stage = match &config {
        Some(c) => c
            .pointer("/zero_optimization/stage")
            .and_then(|s| s.as_u64()),
        None => stage_from_name(&shown),
    };
    match stage {
        Some(s) if s <= 3 => {
            settings.sharding.zero_stage = s as u8;
            if config.is_none() {
                doc.note(format!(
                    "{key}: file not found, ZeRO stage {s} read from its name"
                ));
            }
            doc.note(format!(
                "{key}: ZeRO stage {s}; the recipe does not say how many GPUs: pass --gpus N"
            ));
        }
        _ => doc.unmodelled(
            key,
            &shown,
            "ZeRO stage unknown (file not found): pass --zero and --gpus",
        ),
    }
    if let Some(c) = &config {
        for k in ["offload_optimizer", "offload_param"] {
            if let Some(o) = c.pointer(&format!("/zero_optimization/{k}"))
                && o.get("device")
                    .and_then(|d| d.as_str())
                    .is_some_and(|d| d != "none")
            {
                doc.unmodelled(
                    &format!("{key}: zero_optimization.{k}"),
                    &o.to_string(),
                    "CPU/NVMe offload not modelled: the GPU figures keep those bytes",
                );
            }
        }
    }
    Ok(())
}

fn stage_from_name(name: &str) -> Option<u64> {
    let lower = name.to_ascii_lowercase();
    ["zero", "_z", "-z"].iter().find_map(|tag| {
        let at = lower.rfind(tag)? + tag.len();
        lower[at..].chars().next()?.to_digit(10).map(u64::from)
    })
}

/// The recipe, from what `doc` recorded.
pub fn finish(
    doc: &mut Doc<'_>,
    format: RecipeFormat,
    model: Option<String>,
    adapter: &AdapterChoice,
    mut settings: MemorySettings,
    grad_accum: u64,
) -> Recipe {
    settings.step.grad_accum = grad_accum;
    Recipe {
        format,
        model,
        regime: adapter.spec(),
        settings,
        grad_accum,
        read: std::mem::take(&mut doc.read),
        notes: std::mem::take(&mut doc.notes),
        unmodelled: std::mem::take(&mut doc.unmodelled),
    }
}

/// `gradient_checkpointing_kwargs` (TrainingArguments): with checkpointing on, its
/// `use_reentrant` picks `torch.utils.checkpoint`'s mode (`true`: [`Checkpointing::Reentrant`],
/// which keeps a recomputed block's output through its backward); absent, transformers 5 passes
/// `use_reentrant=False` (a recipe tool's own default, axolotl's, is applied by its reader).
/// Other keys are reported as not modelled.
pub fn read_checkpointing_kwargs(
    doc: &mut Doc,
    key: &str,
    s: &mut MemorySettings,
) -> Result<(), RecipeError> {
    let reentrant = doc.flag(&format!("{key}.use_reentrant"))?;
    if s.activations.checkpointing.recomputes() {
        match reentrant {
            Some(true) => s.activations.checkpointing = Checkpointing::Reentrant,
            Some(false) => s.activations.checkpointing = Checkpointing::Full,
            None => {}
        }
    }
    if let Some(map) = doc.raw(key).and_then(|v| v.as_object()) {
        let others: Vec<String> = map
            .keys()
            .filter(|k| k.as_str() != "use_reentrant")
            .map(|k| format!("{key}.{k}"))
            .collect();
        for other in others {
            doc.unmodelled_if_set(
                &other,
                "checkpointing options beyond use_reentrant not modelled",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepspeed_stage_from_file_names() {
        assert_eq!(
            stage_from_name("deepspeed_configs/zero3_bf16.json"),
            Some(3)
        );
        assert_eq!(
            stage_from_name("examples/deepspeed/ds_z2_config.json"),
            Some(2)
        );
        assert_eq!(stage_from_name("zero1.json"), Some(1));
        assert_eq!(stage_from_name("ds.json"), None);
    }
}

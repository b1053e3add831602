//! LLaMA-Factory YAML. Defaults are LLaMA-Factory's dataclasses (src/llamafactory/hparams/,
//! commit ff6d4d12 of hiyouga/LLaMA-Factory) and transformers' `TrainingArguments`.

use crate::common::{self, AdapterChoice};
use crate::doc::Doc;
use crate::{Recipe, RecipeError, RecipeFormat};
use ftbudget_core::{AttentionImpl, Checkpointing, DType, MemorySettings, Precision};

pub(crate) fn read(doc: &mut Doc<'_>) -> Result<Recipe, RecipeError> {
    let model = doc.string("model_name_or_path")?;
    if model.is_none() {
        return Err(RecipeError::Missing {
            key: "model_name_or_path".into(),
            why: "LLaMA-Factory needs the base model".into(),
        });
    }
    let adapter = adapter(doc)?;
    let mut s = MemorySettings::pytorch();
    // data_args.py: cutoff_len default 2048.
    s.workload.seq = doc.uint("cutoff_len")?.unwrap_or_else(|| {
        doc.note("cutoff_len: LLaMA-Factory's default 2048");
        2048
    });
    // transformers TrainingArguments: per_device_train_batch_size default 8.
    s.workload.batch = doc.uint("per_device_train_batch_size")?.unwrap_or_else(|| {
        doc.note("per_device_train_batch_size: transformers' default 8");
        8
    });
    let grad_accum = doc.uint("gradient_accumulation_steps")?.unwrap_or(1);
    // model/adapter.py: trainable parameters are cast to fp32 unless pure_bf16
    // (cast_trainable_params_to_fp32); the model loads in the compute dtype.
    let bf16 = doc.flag("bf16")?.unwrap_or(false);
    let fp16 = doc.flag("fp16")?.unwrap_or(false);
    let pure_bf16 = doc.flag("pure_bf16")?.unwrap_or(false);
    (s.precision, s.base_dtype) = if pure_bf16 {
        (Precision::Bf16, Some(DType::BF16))
    } else if bf16 {
        (Precision::AmpBf16, Some(DType::BF16))
    } else if fp16 {
        (Precision::AmpFp16, Some(DType::F16))
    } else {
        (Precision::Fp32, Some(DType::F32))
    };
    // TrainingArguments.optim: adamw_torch_fused, transformers' default with torch >= 2.8
    // (training_args.py, transformers 5).
    let optim = doc
        .string("optim")?
        .unwrap_or_else(|| "adamw_torch_fused".into());
    (s.optimizer, s.step_counters) = common::hf_optimizer("optim", &optim)?;
    // model_args.py: disable_gradient_checkpointing default false: checkpointing is on, with
    // `use_reentrant_gc` default true (the model loader passes it as `use_reentrant`).
    if doc.flag("disable_gradient_checkpointing")? != Some(true) {
        s.activations.checkpointing = if doc.flag("use_reentrant_gc")? == Some(false) {
            Checkpointing::Full
        } else {
            Checkpointing::Reentrant
        };
        if !doc.has("disable_gradient_checkpointing") {
            doc.note("gradient checkpointing: on (reentrant unless use_reentrant_gc: false), LLaMA-Factory's default");
        }
    }
    // model_args.py: flash_attn default auto (transformers picks sdpa).
    match doc.string("flash_attn")?.as_deref() {
        None | Some("auto") | Some("sdpa") => s.activations.attention = AttentionImpl::Sdpa,
        Some("fa2") | Some("fa3") => s.activations.attention = AttentionImpl::Flash,
        Some("disabled") | Some("eager") => s.activations.attention = AttentionImpl::Eager,
        Some(other) => {
            return Err(RecipeError::Invalid {
                key: "flash_attn".into(),
                value: other.into(),
                expected: "auto, disabled, sdpa or fa2".into(),
            });
        }
    }
    common::read_deepspeed(doc, "deepspeed", &mut s)?;
    match doc.string("stage")?.as_deref() {
        None | Some("sft") | Some("pt") => {}
        Some(other) => {
            let other = other.to_string();
            doc.unmodelled(
                "stage",
                &other,
                "a reference or reward model beside the policy not modelled",
            );
        }
    }
    let keys: &[(&str, &str)] = &[
        (
            "lora_dropout",
            "lora_dropout masks are not modelled on their own",
        ),
        (
            "enable_liger_kernel",
            "Liger kernels change activation memory",
        ),
        ("use_unsloth", "Unsloth kernels change activation memory"),
        ("use_unsloth_gc", "Unsloth checkpointing not modelled"),
        ("upcast_layernorm", "fp32 norms not modelled"),
        ("upcast_lmhead_output", "fp32 logits not modelled"),
        ("shift_attn", "shift short attention not modelled"),
        ("mixture_of_depths", "mixture of depths not modelled"),
        ("tf32", "TF32 matmuls change compute, not memory"),
        (
            "torch_compile",
            "torch.compile changes activation memory and speed",
        ),
        ("resize_vocab", "a resized embedding not modelled"),
        ("new_special_tokens", "added tokens resize the embedding"),
        (
            "rope_scaling",
            "RoPE scaling changes no parameter but longer contexts change activations",
        ),
        ("fsdp", "FSDP sharding: pass --zero 3 --gpus N"),
    ];
    for (k, why) in keys {
        doc.unmodelled_if_set(k, why);
    }
    for k in [
        "use_galore",
        "use_apollo",
        "use_badam",
        "use_adam_mini",
        "use_muon",
    ] {
        if doc.flag(k)? == Some(true) {
            return Err(RecipeError::Invalid {
                key: k.into(),
                value: "true".into(),
                expected: "false: this optimizer's state is not modelled".into(),
            });
        }
    }
    Ok(common::finish(
        doc,
        RecipeFormat::LlamaFactory,
        model,
        &adapter,
        s,
        grad_accum,
    ))
}

fn adapter(doc: &mut Doc<'_>) -> Result<AdapterChoice, RecipeError> {
    // finetuning_args.py: finetuning_type default lora.
    let kind = doc
        .string("finetuning_type")?
        .unwrap_or_else(|| "lora".into());
    let bits = doc.uint("quantization_bit")?;
    match kind.as_str() {
        "full" => {
            if bits.is_some() {
                return Err(RecipeError::Contradiction {
                    key: "quantization_bit".into(),
                    reason: "a quantized base cannot be fully fine-tuned".into(),
                });
            }
            return Ok(AdapterChoice::Full);
        }
        "lora" => {}
        other => {
            return Err(RecipeError::Invalid {
                key: "finetuning_type".into(),
                value: other.into(),
                expected: "lora or full (freeze and oft are not modelled)".into(),
            });
        }
    }
    // finetuning_args.py: lora_rank 8, lora_target "all", use_dora false.
    let rank = doc.uint("lora_rank")?.unwrap_or(8);
    let targets = match doc.list("lora_target", true)? {
        None => {
            doc.note("lora_target: LLaMA-Factory's default all");
            "all-linear".to_string()
        }
        Some(t) if t.iter().any(|n| n == "all") => "all-linear".to_string(),
        Some(t) => t.join("+"),
    };
    let mut choice = AdapterChoice::lora(rank, targets);
    if let AdapterChoice::Lora {
        modules_to_save,
        dora,
        nf4,
        int8,
        ..
    } = &mut choice
    {
        *modules_to_save = doc.list("additional_target", true)?.unwrap_or_default();
        *dora = doc.flag("use_dora")?.unwrap_or(false);
        let method = doc
            .string("quantization_method")?
            .unwrap_or_else(|| "bnb".into());
        match bits {
            None => {}
            Some(_) if method != "bnb" && method != "bitsandbytes" => {
                return Err(RecipeError::Invalid {
                    key: "quantization_method".into(),
                    value: method,
                    expected: "bnb (the only on-the-fly quantization modelled)".into(),
                });
            }
            Some(4) => {
                if *dora {
                    return Err(RecipeError::Contradiction {
                        key: "use_dora".into(),
                        reason: "DoRA over a 4-bit base (QDoRA) is not modelled".into(),
                    });
                }
                // model_args.py: double_quantization default true.
                *nf4 = Some(doc.flag("double_quantization")?.unwrap_or(true));
            }
            Some(8) => *int8 = true,
            Some(other) => {
                return Err(RecipeError::Invalid {
                    key: "quantization_bit".into(),
                    value: other.to_string(),
                    expected: "4 or 8 (bitsandbytes)".into(),
                });
            }
        }
    }
    Ok(choice)
}

//! TRL / transformers arguments as JSON (or YAML): `TrainingArguments` or TRL's `SFTConfig` plus
//! TRL's `ModelConfig` (model_name_or_path, use_peft, lora_r, load_in_4bit, ...). Defaults:
//! transformers' `TrainingArguments` (per_device_train_batch_size 8, gradient_accumulation_steps
//! 1, no checkpointing, fp32) and, when an SFT key is present, TRL's `SFTConfig`
//! (trl/trainer/sft_config.py: max_length 1024, bf16 and gradient_checkpointing on); TRL's
//! `ModelConfig` (trl/trainer/model_config.py): dtype float32, lora_r 16, targets None (peft's
//! defaults), use_bnb_nested_quant false. Sources: huggingface/trl commit f2cd5771.

use crate::common::{self, AdapterChoice, PEFT_DEFAULT_TARGETS};
use crate::doc::Doc;
use crate::{Recipe, RecipeError, RecipeFormat};
use ftbudget_core::{Checkpointing, DType, MemorySettings, Precision};

const SFT_KEYS: &[&str] = &[
    "max_length",
    "max_seq_length",
    "packing",
    "dataset_text_field",
    "completion_only_loss",
    "assistant_only_loss",
    "use_peft",
];

pub(crate) fn read(doc: &mut Doc<'_>) -> Result<Recipe, RecipeError> {
    let sft = SFT_KEYS.iter().any(|k| doc.has(k));
    let model = doc.string("model_name_or_path")?;
    let adapter = adapter(doc)?;
    let mut s = MemorySettings::pytorch();
    s.workload.batch = doc.uint("per_device_train_batch_size")?.unwrap_or_else(|| {
        doc.note("per_device_train_batch_size: transformers' default 8");
        8
    });
    let grad_accum = doc.uint("gradient_accumulation_steps")?.unwrap_or(1);
    let seq = match doc.uint("max_length")? {
        Some(n) => Some(n),
        None => doc.uint("max_seq_length")?,
    };
    match seq {
        Some(n) => s.workload.seq = n,
        None if sft => {
            doc.note("max_length: TRL SFTConfig's default 1024");
            s.workload.seq = 1024;
        }
        None => doc.note("no sequence length in TrainingArguments: --seq (default 2048)"),
    }
    let bf16 = doc.flag("bf16")?;
    let fp16 = doc.flag("fp16")?.unwrap_or(false);
    let bf16 = bf16.unwrap_or(sft && !fp16);
    // The model's dtype (ModelConfig.dtype, default float32; `auto` is the checkpoint's, taken
    // as the compute dtype).
    let dtype_key = if doc.has("dtype") {
        "dtype"
    } else {
        "torch_dtype"
    };
    let model_dtype = match doc.string(dtype_key)?.as_deref() {
        None => Some(DType::F32),
        Some("auto") => None,
        Some("bfloat16") | Some("bf16") => Some(DType::BF16),
        Some("float16") | Some("fp16") => Some(DType::F16),
        Some("float32") | Some("fp32") => Some(DType::F32),
        Some(other) => {
            return Err(RecipeError::Invalid {
                key: dtype_key.into(),
                value: other.into(),
                expected: "auto, bfloat16, float16 or float32".into(),
            });
        }
    };
    let compute = if bf16 {
        DType::BF16
    } else if fp16 {
        DType::F16
    } else {
        DType::F32
    };
    let stored = model_dtype.unwrap_or(compute);
    s.precision = match (adapter.is_full(), stored, compute) {
        (_, DType::F32, DType::F32) => Precision::Fp32,
        // A full fine-tune of a 16-bit model trains the 16-bit weights.
        (true, DType::BF16, _) => Precision::Bf16,
        (true, DType::F16, _) => Precision::Fp16,
        (_, _, DType::F16) => Precision::AmpFp16,
        (_, _, _) => Precision::AmpBf16,
    };
    // SFTTrainer (trl/trainer/sft_trainer.py) no longer calls prepare_model_for_kbit_training:
    // the rest of a quantized base stays in the model's dtype.
    s.base_dtype = Some(stored);
    // TrainingArguments.optim: adamw_torch_fused, transformers' default with torch >= 2.8
    // (training_args.py, transformers 5).
    let optim = doc
        .string("optim")?
        .unwrap_or_else(|| "adamw_torch_fused".into());
    (s.optimizer, s.step_counters) = common::hf_optimizer("optim", &optim)?;
    // transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing`.
    let checkpointing = match doc.flag("activation_checkpointing")? {
        Some(on) => on,
        None => doc.flag("gradient_checkpointing")?.unwrap_or(sft),
    };
    if checkpointing {
        s.activations.checkpointing = Checkpointing::Full;
    }
    // transformers 5 names them activation_checkpointing_kwargs (the old name still read).
    common::read_checkpointing_kwargs(doc, "gradient_checkpointing_kwargs", &mut s)?;
    common::read_checkpointing_kwargs(doc, "activation_checkpointing_kwargs", &mut s)?;
    common::read_attention(doc, "attn_implementation", &mut s)?;
    common::read_deepspeed(doc, "deepspeed", &mut s)?;
    if let Some(v) = doc.string("fsdp")?
        && v.contains("full_shard")
    {
        s.sharding.zero_stage = 3;
        doc.note("fsdp full_shard: ZeRO stage 3; pass --gpus N");
    }
    let keys: &[(&str, &str)] = &[
        (
            "lora_dropout",
            "lora_dropout masks are not modelled on their own",
        ),
        ("tf32", "TF32 matmuls change compute, not memory"),
        (
            "torch_compile",
            "torch.compile changes activation memory and speed",
        ),
        ("use_liger_kernel", "Liger kernels change activation memory"),
        ("padding_free", "padding-free batches not modelled"),
        (
            "optim_target_modules",
            "GaLore-style optimizers not modelled",
        ),
        ("lora_target_parameters", "target_parameters not modelled"),
    ];
    for (k, why) in keys {
        doc.unmodelled_if_set(k, why);
    }
    Ok(common::finish(
        doc,
        RecipeFormat::Trl,
        model,
        &adapter,
        s,
        grad_accum,
    ))
}

fn adapter(doc: &mut Doc<'_>) -> Result<AdapterChoice, RecipeError> {
    let peft = doc.flag("use_peft")?.unwrap_or(false);
    let in_4bit = doc.flag("load_in_4bit")?.unwrap_or(false);
    let in_8bit = doc.flag("load_in_8bit")?.unwrap_or(false);
    if !peft {
        if in_4bit || in_8bit {
            let key = if in_4bit {
                "load_in_4bit"
            } else {
                "load_in_8bit"
            };
            return Err(RecipeError::Contradiction {
                key: key.into(),
                reason: "a quantized base needs use_peft: true".into(),
            });
        }
        return Ok(AdapterChoice::Full);
    }
    if in_4bit && in_8bit {
        return Err(RecipeError::Contradiction {
            key: "load_in_8bit".into(),
            reason: "load_in_4bit and load_in_8bit are both true".into(),
        });
    }
    let rank = doc.uint("lora_r")?.unwrap_or(16);
    let targets = match doc.list("lora_target_modules", false)? {
        Some(t) if t.iter().any(|n| n == "all-linear") => "all-linear".to_string(),
        Some(t) if !t.is_empty() => t.join("+"),
        _ => {
            doc.note("no lora_target_modules: peft's default targets (q_proj, v_proj)");
            PEFT_DEFAULT_TARGETS.to_string()
        }
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
        *modules_to_save = doc.list("lora_modules_to_save", false)?.unwrap_or_default();
        *dora = doc.flag("use_dora")?.unwrap_or(false);
        if in_4bit {
            if *dora {
                return Err(RecipeError::Contradiction {
                    key: "use_dora".into(),
                    reason: "DoRA over a 4-bit base (QDoRA) is not modelled".into(),
                });
            }
            if let Some(q) = doc.string("bnb_4bit_quant_type")?
                && q != "nf4"
            {
                return Err(RecipeError::Invalid {
                    key: "bnb_4bit_quant_type".into(),
                    value: q,
                    expected: "nf4".into(),
                });
            }
            *nf4 = Some(doc.flag("use_bnb_nested_quant")?.unwrap_or(false));
        }
        *int8 = in_8bit;
    }
    Ok(choice)
}

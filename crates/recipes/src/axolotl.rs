//! axolotl YAML. Defaults are axolotl's pydantic schema (src/axolotl/utils/schemas/, commit
//! 067b021c of axolotl-ai-cloud/axolotl).

use crate::common::{self, AdapterChoice, PEFT_DEFAULT_TARGETS};
use crate::doc::Doc;
use crate::{Recipe, RecipeError, RecipeFormat};
use ftbudget_core::{AttentionImpl, Checkpointing, DType, LossKind, MemorySettings, Precision};

pub(crate) fn read(doc: &mut Doc<'_>) -> Result<Recipe, RecipeError> {
    let model = doc.string("base_model")?;
    if model.is_none() {
        return Err(RecipeError::Missing {
            key: "base_model".into(),
            why: "axolotl needs the base model".into(),
        });
    }
    let adapter = adapter(doc)?;
    let mut s = MemorySettings::pytorch();
    // schemas/config.py: sequence_len default 512.
    s.workload.seq = doc.uint("sequence_len")?.unwrap_or_else(|| {
        doc.note("sequence_len: axolotl's default 512");
        512
    });
    // schemas/training.py: micro_batch_size and gradient_accumulation_steps default 1.
    s.workload.batch = doc.uint("micro_batch_size")?.unwrap_or(1);
    let grad_accum = doc.uint("gradient_accumulation_steps")?.unwrap_or(1);
    precision(doc, &adapter, &mut s)?;
    // schemas/training.py: optimizer default adamw_torch_fused.
    let optimizer = doc
        .string("optimizer")?
        .unwrap_or_else(|| "adamw_torch_fused".into());
    (s.optimizer, s.step_counters) = common::hf_optimizer("optimizer", &optimizer)?;
    // schemas/config.py: gradient_checkpointing default false; "offload" also checkpoints.
    match doc.raw("gradient_checkpointing") {
        // "offload": the checkpoints go to host memory (axolotl's CPU-offloaded checkpointing).
        Some(serde_json::Value::String(mode)) if mode == "offload" => {
            doc.string("gradient_checkpointing")?;
            s.activations.checkpointing = Checkpointing::Full;
            s.step.activation_offload = true;
        }
        Some(serde_json::Value::String(mode)) => {
            s.activations.checkpointing = Checkpointing::Full;
            let mode = mode.clone();
            doc.unmodelled(
                "gradient_checkpointing",
                &mode,
                "this checkpointing mode is modelled as full checkpointing on the GPU",
            );
        }
        _ => {
            if doc.flag("gradient_checkpointing")? == Some(true) {
                s.activations.checkpointing = Checkpointing::Full;
            }
        }
    }
    // utils/config/__init__.py (normalize_config): with checkpointing on and no kwargs, no
    // `unfrozen_parameters` and no `rl`, axolotl sets `use_reentrant: true`.
    if s.activations.checkpointing == Checkpointing::Full
        && !s.step.activation_offload
        && !doc.has("gradient_checkpointing_kwargs")
        && !doc.has("unfrozen_parameters")
        && !doc.has("rl")
    {
        s.activations.checkpointing = Checkpointing::Reentrant;
        doc.note("gradient checkpointing: reentrant, axolotl's default (gradient_checkpointing_kwargs unset)");
    }
    common::read_checkpointing_kwargs(doc, "gradient_checkpointing_kwargs", &mut s)?;
    attention(doc, &mut s)?;
    step(doc, &mut s)?;
    common::read_deepspeed(doc, "deepspeed", &mut s)?;
    if doc.set("fsdp").is_some() || doc.set("fsdp_config").is_some() {
        // FSDP's FULL_SHARD shards parameters, gradients and optimizer state: ZeRO stage 3.
        s.sharding.zero_stage = 3;
        doc.read.push(("fsdp".into(), "full shard".into()));
        doc.note("fsdp: sharded as ZeRO stage 3; pass --gpus N");
        doc.unmodelled_if_set(
            "fsdp_config.fsdp_offload_params",
            "CPU offload not modelled",
        );
        doc.unmodelled_if_set("fsdp_config.offload_params", "CPU offload not modelled");
    }
    unmodelled(doc);
    Ok(common::finish(
        doc,
        RecipeFormat::Axolotl,
        model,
        &adapter,
        s,
        grad_accum,
    ))
}

/// The settings of the step that change its peak: the loss kernels and activation offloading
/// (schemas/config.py and the integrations' args: all default off).
fn step(doc: &mut Doc<'_>, s: &mut MemorySettings) -> Result<(), RecipeError> {
    // Apple's cut cross-entropy and Liger's fused linear cross-entropy never hold the logits.
    let fused = doc.flag("cut_cross_entropy")? == Some(true)
        || doc.flag("liger_fused_linear_cross_entropy")? == Some(true);
    if fused {
        s.step.loss = LossKind::Fused;
    } else if doc.flag("chunked_cross_entropy")? == Some(true) {
        s.step.loss = LossKind::Chunked;
    }
    if doc.flag("activation_offloading")? == Some(true) {
        s.step.activation_offload = true;
    }
    Ok(())
}

fn adapter(doc: &mut Doc<'_>) -> Result<AdapterChoice, RecipeError> {
    let kind = doc.string("adapter")?.unwrap_or_default();
    // schemas/peft.py: load_in_8bit and load_in_4bit default false.
    let in_4bit = doc.flag("load_in_4bit")?.unwrap_or(false);
    let in_8bit = doc.flag("load_in_8bit")?.unwrap_or(false);
    if in_4bit && in_8bit {
        return Err(RecipeError::Contradiction {
            key: "load_in_8bit".into(),
            reason: "load_in_4bit and load_in_8bit are both true".into(),
        });
    }
    match kind.as_str() {
        "" => {
            if in_4bit || in_8bit {
                let key = if in_4bit {
                    "load_in_4bit"
                } else {
                    "load_in_8bit"
                };
                return Err(RecipeError::Contradiction {
                    key: key.into(),
                    reason:
                        "a quantized base cannot be fully fine-tuned: set adapter: lora or qlora"
                            .into(),
                });
            }
            return Ok(AdapterChoice::Full);
        }
        "qlora" if !in_4bit => {
            return Err(RecipeError::Contradiction {
                key: "adapter".into(),
                reason: "qlora needs load_in_4bit: true".into(),
            });
        }
        "lora" if in_4bit => {
            return Err(RecipeError::Contradiction {
                key: "load_in_4bit".into(),
                reason: "a 4-bit base is adapter: qlora".into(),
            });
        }
        "lora" | "qlora" => {}
        other => {
            return Err(RecipeError::Invalid {
                key: "adapter".into(),
                value: other.into(),
                expected: "lora, qlora or no adapter (full fine-tuning)".into(),
            });
        }
    }
    // schemas/peft.py: lora_r has no default.
    let rank = doc.uint("lora_r")?.ok_or_else(|| RecipeError::Missing {
        key: "lora_r".into(),
        why: "axolotl has no default rank".into(),
    })?;
    // loaders/adapter.py: lora_target_linear adds every Linear but the output embedding to
    // lora_target_modules; with neither, peft's defaults for the model type.
    let linear = doc.flag("lora_target_linear")?.unwrap_or(false);
    let names = doc.list("lora_target_modules", false)?;
    let targets = match (linear, names) {
        (true, _) => "all-linear".to_string(),
        (false, Some(n)) if !n.is_empty() => n.join("+"),
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
        kbit_prepared,
        int8,
        layers,
        rank_pattern,
        ..
    } = &mut choice
    {
        *modules_to_save = doc.list("lora_modules_to_save", false)?.unwrap_or_default();
        *dora = doc.flag("peft_use_dora")?.unwrap_or(false);
        *layers = doc.layers("peft_layers_to_transform")?;
        *rank_pattern = doc.ranks("lora_rank_pattern")?;
        doc.ranks("lora_alpha_pattern")?; // scaling only: no memory
        if in_4bit {
            if *dora {
                return Err(RecipeError::Contradiction {
                    key: "peft_use_dora".into(),
                    reason: "DoRA over a 4-bit base (QDoRA) is not modelled".into(),
                });
            }
            // loaders/model.py: bnb_4bit_use_double_quant True, quant type nf4, then
            // prepare_model_for_kbit_training.
            *nf4 = Some(true);
            *kbit_prepared = true;
        }
        *int8 = in_8bit;
    }
    Ok(choice)
}

/// bf16 (schemas/config.py default "auto": bf16 on GPUs that support it, assumed here), fp16,
/// or fp32. The model loads in that dtype; peft keeps adapter weights in fp32
/// (`autocast_adapter_dtype=True`), so adapters train under autocast while a full fine-tune
/// trains the 16-bit weights themselves. A quantized base goes through peft's
/// `prepare_model_for_kbit_training` (loaders/model.py), which casts every other 16-bit
/// parameter to fp32.
fn precision(
    doc: &mut Doc<'_>,
    adapter: &AdapterChoice,
    s: &mut MemorySettings,
) -> Result<(), RecipeError> {
    let bf16 = match doc.raw("bf16") {
        Some(serde_json::Value::String(v)) if v == "auto" || v == "full" => {
            doc.read.push(("bf16".into(), v.clone()));
            true
        }
        _ => doc.flag("bf16")?.unwrap_or_else(|| {
            doc.note("bf16: axolotl's default auto (bf16 on Ampere or newer)");
            true
        }),
    };
    let fp16 = doc.flag("fp16")?.unwrap_or(false);
    let (dtype, amp, pure) = if bf16 {
        (DType::BF16, Precision::AmpBf16, Precision::Bf16)
    } else if fp16 {
        (DType::F16, Precision::AmpFp16, Precision::Fp16)
    } else {
        (DType::F32, Precision::Fp32, Precision::Fp32)
    };
    s.precision = if adapter.is_full() { pure } else { amp };
    s.base_dtype = Some(if adapter.quantized() {
        DType::F32
    } else {
        dtype
    });
    Ok(())
}

fn attention(doc: &mut Doc<'_>, s: &mut MemorySettings) -> Result<(), RecipeError> {
    // transformers' default attention is sdpa; axolotl's flags pick another.
    if doc.flag("flash_attention")? == Some(true) {
        s.activations.attention = AttentionImpl::Flash;
    }
    if doc.flag("sdp_attention")? == Some(true) {
        s.activations.attention = AttentionImpl::Sdpa;
    }
    if doc.flag("eager_attention")? == Some(true) {
        s.activations.attention = AttentionImpl::Eager;
    }
    doc.unmodelled_if_set(
        "xformers_attention",
        "xformers attention not modelled: sdpa's figures stand in",
    );
    doc.unmodelled_if_set(
        "flex_attention",
        "flex attention not modelled: sdpa's figures stand in",
    );
    common::read_attention(doc, "attn_implementation", s)
}

fn unmodelled(doc: &mut Doc<'_>) {
    let keys: &[(&str, &str)] = &[
        (
            "lora_dropout",
            "lora_dropout masks are not modelled on their own (--dropout applies to every dropout)",
        ),
        ("tf32", "TF32 matmuls change compute, not memory"),
        (
            "torch_compile",
            "torch.compile changes activation memory and speed",
        ),
        ("fp8", "fp8 training not modelled"),
        (
            "rl",
            "preference training (a reference model, paired sequences) not modelled",
        ),
        ("lora_target_parameters", "target_parameters not modelled"),
        (
            "peft_layers_pattern",
            "layers_pattern: ftbudget counts layers of the model's own layer list",
        ),
        (
            "overrides_of_model_config",
            "the model's config is overridden: pass the changed config.json as --model",
        ),
        ("tokens", "added tokens resize the embedding"),
        (
            "bnb_config_kwargs",
            "bitsandbytes settings beyond axolotl's defaults not modelled",
        ),
        (
            "sequence_parallel_degree",
            "sequence parallelism not modelled",
        ),
        ("context_parallel_size", "context parallelism not modelled"),
        ("tensor_parallel_size", "tensor parallelism not modelled"),
        ("relora", "ReLoRA not modelled"),
        ("lisa_n_layers", "LISA not modelled"),
    ];
    for (k, why) in keys {
        doc.unmodelled_if_set(k, why);
    }
    // liger_fused_linear_cross_entropy is read above; the other Liger kernels are not modelled.
    doc.unmodelled_prefix("liger_", "Liger kernels change activation memory");
    doc.unmodelled_prefix("unsloth_", "Unsloth kernels change activation memory");
}

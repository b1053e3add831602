//! torchtune YAML configs (recipes/configs/ of pytorch/torchtune, commit bd2a0fc7). The model
//! builder named by `model._component_` gives the preset and the regime; its LoRA arguments
//! default as the builders' signatures do (`apply_lora_to_mlp=False`, `apply_lora_to_output=False`,
//! `use_dora=False`), and the recipe trains in the config's `dtype` throughout (the model is
//! built under `training.set_default_dtype(dtype)`, adapters included).

use crate::common::{AdapterChoice, finish};
use crate::doc::Doc;
use crate::{Recipe, RecipeError, RecipeFormat};
use ftbudget_core::{
    AttentionImpl, Checkpointing, DType, LossKind, MemorySettings, Optimizer, Precision,
};

/// torchtune's model builders and the ftbudget presets of the same shape (Llama 3.1 8B has
/// Llama 3 8B's shape; Llama 3 70B has Llama 3.1 70B's).
const PRESETS: &[(&str, &str)] = &[
    ("llama3_8b", "llama-3-8b"),
    ("llama3_1_8b", "llama-3-8b"),
    ("llama3_70b", "llama-3.1-70b"),
    ("llama3_1_70b", "llama-3.1-70b"),
    ("llama3_2_1b", "llama-3.2-1b"),
    ("llama3_2_3b", "llama-3.2-3b"),
    ("llama2_7b", "llama-2-7b"),
    ("llama2_13b", "llama-2-13b"),
    ("llama2_70b", "llama-2-70b"),
    ("mistral_7b", "mistral-7b"),
    ("qwen2_7b", "qwen2-7b"),
    ("gemma_2b", "gemma-2b"),
    ("qwen3_0_6b_base", "qwen3-0.6b"),
    ("qwen3_0_6b_instruct", "qwen3-0.6b"),
    ("qwen3_4b_base", "qwen3-4b"),
    ("qwen3_4b_instruct", "qwen3-4b"),
    ("qwen3_8b_base", "qwen3-8b"),
    ("qwen3_8b_instruct", "qwen3-8b"),
    ("qwen3_14b_base", "qwen3-14b"),
    ("qwen3_14b_instruct", "qwen3-14b"),
    ("qwen3_32b", "qwen3-32b"),
];

/// torchtune's attention module names as Hugging Face's (`output_proj` is `o_proj`).
fn hf_attention_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "q_proj" => "q_proj",
        "k_proj" => "k_proj",
        "v_proj" => "v_proj",
        "output_proj" => "o_proj",
        _ => return None,
    })
}

pub(crate) fn read(doc: &mut Doc<'_>) -> Result<Recipe, RecipeError> {
    let component = doc.string("model._component_")?.unwrap_or_default();
    let builder = component.rsplit('.').next().unwrap_or_default().to_string();
    let (kind, base) = if let Some(b) = builder.strip_prefix("qlora_") {
        ("qlora", b)
    } else if let Some(b) = builder.strip_prefix("lora_") {
        ("lora", b)
    } else {
        ("full", builder.as_str())
    };
    let model = PRESETS
        .iter()
        .find(|(b, _)| *b == base)
        .map(|(_, p)| p.to_string());
    if model.is_none() {
        doc.note(format!(
            "model._component_ {component}: no ftbudget preset of that shape: pass --model"
        ));
    }
    let adapter = if kind == "full" {
        AdapterChoice::Full
    } else {
        lora(doc, kind == "qlora")?
    };
    let mut s = MemorySettings::pytorch();
    // The recipes read cfg.batch_size and cfg.gradient_accumulation_steps.
    s.workload.batch = doc.uint("batch_size")?.unwrap_or(1);
    let grad_accum = doc.uint("gradient_accumulation_steps")?.unwrap_or(1);
    match doc.uint("tokenizer.max_seq_len")? {
        Some(n) => s.workload.seq = n,
        None => doc.unmodelled(
            "tokenizer.max_seq_len",
            "null",
            "no truncation: the sequence length is the data's; --seq (default 2048) stands in",
        ),
    }
    // training.get_dtype: bf16 or fp32, the whole model and optimizer in that dtype.
    let dtype = doc.string("dtype")?.unwrap_or_else(|| "bf16".into());
    (s.precision, s.base_dtype) = match dtype.as_str() {
        "bf16" | "bfloat16" => (Precision::Bf16, Some(DType::BF16)),
        "fp32" | "float32" => (Precision::Fp32, Some(DType::F32)),
        other => {
            return Err(RecipeError::Invalid {
                key: "dtype".into(),
                value: other.into(),
                expected: "bf16 or fp32 (torchtune refuses fp16)".into(),
            });
        }
    };
    // The recipes: cfg.get("enable_activation_checkpointing", False).
    if doc.flag("enable_activation_checkpointing")? == Some(true) {
        s.activations.checkpointing = Checkpointing::Full;
    }
    // torchtune's attention calls F.scaled_dot_product_attention.
    s.activations.attention = AttentionImpl::Sdpa;
    (s.optimizer, s.step_counters) = optimizer(doc)?;
    if doc.has("fsdp_cpu_offload") || doc.has("fsdp_reshard_after_forward") {
        s.sharding.zero_stage = 3;
        doc.note("distributed recipe: FSDP full shard as ZeRO stage 3; pass --gpus N");
    }
    step(doc, &mut s)?;
    let keys: &[(&str, &str)] = &[
        (
            "compile",
            "torch.compile changes activation memory and speed",
        ),
        ("fsdp_cpu_offload", "CPU offload not modelled"),
        (
            "model.lora_dropout",
            "lora_dropout masks are not modelled on their own",
        ),
        ("tensor_parallel_dim", "tensor parallelism not modelled"),
    ];
    for (k, why) in keys {
        doc.unmodelled_if_set(k, why);
    }
    Ok(finish(
        doc,
        RecipeFormat::Torchtune,
        model,
        &adapter,
        s,
        grad_accum,
    ))
}

/// The recipe's settings that change the step's peak: the loss, the optimizer in the backward
/// and activation offloading (the recipes' cfg.get(..., False)).
fn step(doc: &mut Doc<'_>, s: &mut MemorySettings) -> Result<(), RecipeError> {
    let loss = doc.string("loss._component_")?.unwrap_or_default();
    if loss.ends_with("CEWithChunkedOutputLoss") {
        s.step.loss = LossKind::Chunked;
    } else if loss.ends_with("LinearCrossEntropyLoss") {
        // The output projection and the loss chunk by chunk: the logits never exist whole, but
        // each chunk's log-softmax is saved for the backward, as the chunked loss saves it.
        s.step.loss = LossKind::Chunked;
        doc.note("loss: LinearCrossEntropyLoss counted as the chunked loss (its bf16 logits are not held whole: the peak is over-estimated by them)");
    }
    if doc.flag("optimizer_in_bwd")? == Some(true) {
        s.step.optimizer_in_backward = true;
    }
    if doc.flag("enable_activation_offloading")? == Some(true) {
        s.step.activation_offload = true;
    }
    Ok(())
}

fn lora(doc: &mut Doc<'_>, qlora: bool) -> Result<AdapterChoice, RecipeError> {
    let rank = doc
        .uint("model.lora_rank")?
        .ok_or_else(|| RecipeError::Missing {
            key: "model.lora_rank".into(),
            why: "torchtune's LoRA builders need it".into(),
        })?;
    let attn = doc
        .list("model.lora_attn_modules", false)?
        .unwrap_or_default();
    let mut targets = Vec::new();
    for name in &attn {
        let hf = hf_attention_name(name).ok_or_else(|| RecipeError::Invalid {
            key: "model.lora_attn_modules".into(),
            value: name.clone(),
            expected: "q_proj, k_proj, v_proj or output_proj".into(),
        })?;
        targets.push(hf.to_string());
    }
    // apply_lora_to_mlp: w1, w2, w3 are Hugging Face's gate_proj, down_proj, up_proj.
    if doc.flag("model.apply_lora_to_mlp")? == Some(true) {
        targets.extend(["gate_proj", "up_proj", "down_proj"].map(String::from));
    }
    if doc.flag("model.apply_lora_to_output")? == Some(true) {
        targets.push("lm_head".into());
    }
    if targets.is_empty() {
        return Err(RecipeError::Missing {
            key: "model.lora_attn_modules".into(),
            why: "no module to adapt".into(),
        });
    }
    let dora = doc.flag("model.use_dora")?.unwrap_or(false);
    let mut choice = AdapterChoice::lora(rank, targets.join("+"));
    if let AdapterChoice::Lora { dora: d, nf4, .. } = &mut choice {
        *d = dora;
        if qlora {
            if dora {
                return Err(RecipeError::Contradiction {
                    key: "model.use_dora".into(),
                    reason: "DoRA over a 4-bit base (QDoRA) is not modelled".into(),
                });
            }
            // torchao's NF4Tensor: blocks of 64, scalers quantized per 256 blocks; bitsandbytes'
            // double quantization has the same sizes but one more 256-entry fp32 codebook.
            *nf4 = Some(true);
            doc.note("qlora: torchao NF4 counted as bitsandbytes NF4 with double quantization (1 KiB more per tensor)");
        }
    }
    Ok(choice)
}

fn optimizer(doc: &mut Doc<'_>) -> Result<(Optimizer, bool), RecipeError> {
    let key = "optimizer._component_";
    let component = doc
        .string(key)?
        .unwrap_or_else(|| "torch.optim.AdamW".into());
    Ok(match component.as_str() {
        // torch's default step is foreach (one state-sized temporary); `fused: True` updates in
        // place.
        "torch.optim.AdamW" | "torch.optim.Adam" => {
            if doc.flag("optimizer.fused")? == Some(true) {
                (Optimizer::AdamWFused, true)
            } else {
                (Optimizer::AdamW, true)
            }
        }
        // bitsandbytes' 32-bit AdamW: one in-place kernel per tensor, no step tensor.
        "bitsandbytes.optim.PagedAdamW"
        | "bitsandbytes.optim.PagedAdamW32bit"
        | "bitsandbytes.optim.AdamW32bit" => (Optimizer::AdamWFused, false),
        "bitsandbytes.optim.PagedAdamW8bit"
        | "bitsandbytes.optim.AdamW8bit"
        | "torchao.optim.AdamW8bit"
        | "torchao.prototype.low_bit_optim.AdamW8bit" => (Optimizer::AdamW8bit, false),
        "torch.optim.SGD" => {
            let momentum = doc
                .raw("optimizer.momentum")
                .and_then(|m| m.as_f64())
                .unwrap_or(0.0);
            if momentum > 0.0 {
                (Optimizer::SgdMomentum, false)
            } else {
                (Optimizer::Sgd, false)
            }
        }
        other => {
            return Err(RecipeError::Invalid {
                key: key.into(),
                value: other.into(),
                expected:
                    "torch.optim.AdamW, torch.optim.SGD or a bitsandbytes AdamW (8-bit or 32-bit)"
                        .into(),
            });
        }
    })
}

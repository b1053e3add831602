//! ftbudget against measured PyTorch training steps on the families of issue 9
//! (`measured_memory_families.json`, 200 records from `tools/measure-memory`: qwen3, qwen3_moe,
//! qwen2_moe, gemma2, gemma3_text, gpt_oss, deepseek_v3, olmo2, phi, falcon; full, LoRA and
//! DoRA; fp32 and autocast; eager and sdpa; two shapes). Weights, gradients and optimizer state
//! are exact on every record (AdamW's step counters included: peft's `ParamWrapper` keeps one
//! lora_A/lora_B per layer for all of a layer's fused experts);
//! activations are held to each group's recorded worst error: within 10% on every group. The
//! activation building blocks these records calibrated: LayerNorm,
//! the plain MLP's activation (and Python `gelu_new`), fused experts, `ParamWrapper` delta
//! weights, gpt-oss's clamped SwiGLU, latent attention's padded values, DoRA's fp32 bias-free
//! output on biased modules, Gemma 2's final logit soft-capping (tanh keeps the logits).

mod common;

use common::{Bound, Worst, bound, precision, regime_kind};
use ftbudget_measurements::{activation_error, measured_activations, parse_records, predict};

const FAMILIES: &str = include_str!("../../../fixtures/memory/measured_memory_families.json");

/// Worst activation error per family, regime and precision (both attention kernels and shapes
/// together), and the bound: 1% where the model is within 0.5%, else the worst rounded up past
/// half a point. (A measured −3.14% is not π.)
#[allow(clippy::approx_constant)]
const ACTIVATIONS: &[Bound] = &[
    bound("deepseek_v3 full autocast", -3.45, 4.0),
    bound("deepseek_v3 full fp32", -0.39, 1.0),
    bound("deepseek_v3 lora autocast", -3.14, 4.0),
    bound("deepseek_v3 lora fp32", -0.41, 1.0),
    bound("falcon dora autocast", -2.19, 3.0),
    bound("falcon dora fp32", -2.61, 4.0),
    bound("falcon full autocast", 3.08, 4.0),
    bound("falcon full fp32", -2.72, 4.0),
    bound("falcon lora autocast", -4.01, 5.0),
    bound("falcon lora fp32", -5.55, 7.0),
    bound("gemma2 dora autocast", -0.11, 1.0),
    bound("gemma2 dora fp32", -0.07, 1.0),
    bound("gemma2 full autocast", -0.23, 1.0),
    bound("gemma2 full fp32", -0.18, 1.0),
    bound("gemma2 lora autocast", -0.25, 1.0),
    bound("gemma2 lora fp32", -0.18, 1.0),
    bound("gemma3_text dora autocast", -1.23, 2.0),
    bound("gemma3_text dora fp32", -1.39, 2.0),
    bound("gemma3_text full autocast", -4.87, 6.0),
    bound("gemma3_text full fp32", -2.49, 3.0),
    bound("gemma3_text lora autocast", -2.43, 3.0),
    bound("gemma3_text lora fp32", -2.98, 4.0),
    bound("gpt_oss dora autocast", 5.80, 6.5),
    bound("gpt_oss dora fp32", 5.17, 6.0),
    bound("gpt_oss full autocast", -0.33, 1.0),
    bound("gpt_oss full fp32", -0.37, 1.0),
    bound("gpt_oss lora autocast", 7.20, 8.0),
    bound("gpt_oss lora fp32", 6.95, 7.5),
    bound("olmo2 dora autocast", 0.04, 1.0),
    bound("olmo2 dora fp32", 0.02, 1.0),
    bound("olmo2 full autocast", -3.34, 4.0),
    bound("olmo2 full fp32", 0.00, 1.0),
    bound("olmo2 lora autocast", 0.00, 1.0),
    bound("olmo2 lora fp32", 0.00, 1.0),
    bound("phi dora autocast", 0.10, 1.0),
    bound("phi dora fp32", 0.06, 1.0),
    bound("phi full autocast", 2.41, 3.0),
    bound("phi full fp32", 1.53, 2.5),
    bound("phi lora autocast", -0.04, 1.0),
    bound("phi lora fp32", -0.02, 1.0),
    bound("qwen2_moe dora autocast", 1.24, 2.0),
    bound("qwen2_moe dora fp32", 0.85, 2.0),
    bound("qwen2_moe full autocast", -2.70, 3.5),
    bound("qwen2_moe full fp32", -2.24, 3.0),
    bound("qwen2_moe lora autocast", 1.92, 2.5),
    bound("qwen2_moe lora fp32", 1.52, 3.0),
    bound("qwen3 dora autocast", -1.34, 2.0),
    bound("qwen3 dora fp32", 0.04, 1.0),
    bound("qwen3 full autocast", 0.00, 1.0),
    bound("qwen3 full fp32", 0.00, 1.0),
    bound("qwen3 lora autocast", -2.25, 3.0),
    bound("qwen3 lora fp32", 0.00, 1.0),
    bound("qwen3_moe full autocast", 0.00, 1.0),
    bound("qwen3_moe full fp32", 0.00, 1.0),
    bound("qwen3_moe lora autocast", 0.18, 1.0),
    bound("qwen3_moe lora fp32", 0.00, 1.0),
];

#[test]
fn family_records_have_exact_state_and_bounded_activations() {
    let records = parse_records(FAMILIES).unwrap();
    assert_eq!(records.len(), 200);
    let mut worst = Worst::default();
    for r in &records {
        // PyTorch on CPU runs DeepSeek's latent attention (query/key and value widths differ)
        // through sdpa's math fallback, which saves what eager attention saves: the measured
        // bytes equal the eager twin's, so those records are predicted as eager attention (the
        // fused kernel the model describes for sdpa is what a GPU runs).
        let mut r = r.clone();
        if r.shape.family == "deepseek_v3" && r.attn_implementation_used == "sdpa" {
            let twin_id = r.id.replace("|sdpa", "|eager");
            let twin = records.iter().find(|t| t.id == twin_id).unwrap();
            // Equal on 6 of 8 records; the two at batch 2 x 32 under autocast keep one
            // 48 KiB tensor more (3%).
            let (a, b) = (measured_activations(&r), measured_activations(twin));
            assert!(
                a.abs_diff(b) * 100 <= 4 * b,
                "{}: sdpa on CPU is not the math fallback ({a} vs {b})",
                r.id
            );
            r.attn_implementation_used = "eager".into();
        }
        let r = &r;
        let e = predict(r).unwrap();
        common::assert_state_buckets_exact(r, &e);
        let group = format!("{} {} {}", r.shape.family, regime_kind(r), precision(r));
        worst.add(group, activation_error(r, &e), &r.id);
    }
    worst.check("activations", ACTIVATIONS);
}

/// More decoder families (`measured_memory_families_more.json`, 176 records from
/// `tools/measure-memory`: glm4_moe, olmoe, olmo3, seed_oss, arcee, hunyuan_v1_dense,
/// gpt_bigcode (multi-query), olmo (parameter-free LayerNorms); full, LoRA
/// and DoRA (refused by peft on the fused experts of glm4_moe and olmoe); fp32 and autocast;
/// eager and sdpa; two shapes). State buckets exact, activations within 10% on every group (the
/// bound rule above, capped at 10%).
const MORE: &str = include_str!("../../../fixtures/memory/measured_memory_families_more.json");

const MORE_ACTIVATIONS: &[Bound] = &[
    bound("arcee dora autocast", 0.05, 1.0),
    bound("arcee dora fp32", 0.03, 1.0),
    bound("arcee full autocast", 0.00, 1.0),
    bound("arcee full fp32", 0.00, 1.0),
    bound("arcee lora autocast", 0.00, 1.0),
    bound("arcee lora fp32", 0.00, 1.0),
    bound("glm4_moe full autocast", 0.15, 1.0),
    bound("glm4_moe full fp32", 0.00, 1.0),
    bound("glm4_moe lora autocast", 0.31, 1.0),
    bound("glm4_moe lora fp32", 0.00, 1.0),
    bound("gpt_bigcode dora autocast", -0.94, 2.0),
    bound("gpt_bigcode dora fp32", -1.27, 2.0),
    bound("gpt_bigcode full autocast", 2.87, 4.0),
    bound("gpt_bigcode full fp32", 2.10, 3.0),
    bound("gpt_bigcode lora autocast", -1.93, 3.0),
    bound("gpt_bigcode lora fp32", -2.59, 4.0),
    bound("hunyuan_v1_dense dora autocast", 0.04, 1.0),
    bound("hunyuan_v1_dense dora fp32", 0.03, 1.0),
    bound("hunyuan_v1_dense full autocast", -3.33, 4.0),
    bound("hunyuan_v1_dense full fp32", 0.00, 1.0),
    bound("hunyuan_v1_dense lora autocast", 0.00, 1.0),
    bound("hunyuan_v1_dense lora fp32", 0.00, 1.0),
    bound("olmo dora autocast", 0.02, 1.0),
    bound("olmo dora fp32", 0.01, 1.0),
    bound("olmo full autocast", 2.90, 4.0),
    bound("olmo full fp32", 2.03, 3.0),
    bound("olmo lora autocast", -0.05, 1.0),
    bound("olmo lora fp32", -0.03, 1.0),
    bound("olmo3 dora autocast", -1.36, 2.0),
    bound("olmo3 dora fp32", -1.58, 3.0),
    bound("olmo3 full autocast", -5.80, 7.0),
    bound("olmo3 full fp32", -2.89, 4.0),
    bound("olmo3 lora autocast", -2.50, 3.0),
    bound("olmo3 lora fp32", -3.25, 4.0),
    bound("olmoe full autocast", 0.17, 1.0),
    bound("olmoe full fp32", 0.16, 1.0),
    bound("olmoe lora autocast", 0.35, 1.0),
    bound("olmoe lora fp32", 0.17, 1.0),
    bound("seed_oss dora autocast", -3.19, 4.0),
    bound("seed_oss dora fp32", -3.98, 5.0),
    bound("seed_oss full autocast", -4.89, 6.0),
    bound("seed_oss full fp32", -6.97, 8.0),
    bound("seed_oss lora autocast", -5.52, 7.0),
    bound("seed_oss lora fp32", -7.68, 9.0),
];

#[test]
fn more_family_records_have_exact_state_and_bounded_activations() {
    let records = parse_records(MORE).unwrap();
    assert_eq!(records.len(), 176);
    let mut worst = Worst::default();
    for r in &records {
        let e = predict(r).unwrap();
        common::assert_state_buckets_exact(r, &e);
        let group = format!("{} {} {}", r.shape.family, regime_kind(r), precision(r));
        worst.add(group, activation_error(r, &e), &r.id);
    }
    worst.check("activations", MORE_ACTIVATIONS);
}

//! ftbudget against measured PyTorch training steps on the families of issue 9
//! (`measured_memory_families.json`, 164 records from `tools/measure-memory`: qwen3, qwen3_moe,
//! gemma3_text, gpt_oss, deepseek_v3, olmo2, phi, falcon; full, LoRA and DoRA; fp32 and
//! autocast; eager and sdpa; two shapes). Weights, gradients and optimizer state are exact on
//! every record; activations are held to each group's recorded worst error.
//!
//! Known gaps (no activation term of the per-operation model was fitted to these records yet):
//! mixture-of-experts layers (qwen3_moe, deepseek_v3, gpt_oss: the routing, the dispatch's
//! gathered inputs and gpt-oss's clamped SwiGLU are under-counted, -15% to -38%), phi's parallel
//! block with partial rotary and biased dense layers (-11% to -28%), and falcon's multi-query
//! parallel block (over-counted, +7% to +27%). qwen3, olmo2 and gemma3_text are within 6%.

mod common;

use common::{Bound, Worst, bound, precision, regime_kind};
use ftbudget_measurements::{activation_error, parse_records, predict};

const FAMILIES: &str = include_str!("../../../fixtures/memory/measured_memory_families.json");

/// Worst activation error per family, regime and precision (both attention kernels and shapes
/// together), and the bound: 1% where the model is within 0.5%, else the worst rounded up past
/// half a point.
const ACTIVATIONS: &[Bound] = &[
    bound("deepseek_v3 full autocast", -33.04, 34.0),
    bound("deepseek_v3 full fp32", -16.76, 18.0),
    bound("deepseek_v3 lora autocast", -37.93, 39.0),
    bound("deepseek_v3 lora fp32", -20.60, 22.0),
    bound("falcon dora autocast", 7.02, 8.0),
    bound("falcon dora fp32", 9.37, 10.0),
    bound("falcon full autocast", 25.77, 27.0),
    bound("falcon full fp32", 27.24, 28.0),
    bound("falcon lora autocast", 13.88, 15.0),
    bound("falcon lora fp32", 19.64, 21.0),
    bound("gemma3_text dora autocast", -2.24, 3.0),
    bound("gemma3_text dora fp32", -2.68, 4.0),
    bound("gemma3_text full autocast", -5.79, 7.0),
    bound("gemma3_text full fp32", -4.18, 5.0),
    bound("gemma3_text lora autocast", -3.61, 5.0),
    bound("gemma3_text lora fp32", -5.03, 6.0),
    bound("gpt_oss dora autocast", -28.74, 30.0),
    bound("gpt_oss dora fp32", -11.82, 13.0),
    bound("gpt_oss full autocast", -36.97, 38.0),
    bound("gpt_oss full fp32", -26.08, 27.0),
    bound("gpt_oss lora autocast", -30.53, 32.0),
    bound("gpt_oss lora fp32", -15.57, 17.0),
    bound("olmo2 dora autocast", 0.04, 1.0),
    bound("olmo2 dora fp32", 0.02, 1.0),
    bound("olmo2 full autocast", -3.34, 4.0),
    bound("olmo2 full fp32", 0.00, 1.0),
    bound("olmo2 lora autocast", 0.00, 1.0),
    bound("olmo2 lora fp32", 0.00, 1.0),
    bound("phi dora autocast", -23.37, 24.0),
    bound("phi dora fp32", -16.22, 17.0),
    bound("phi full autocast", -14.80, 16.0),
    bound("phi full fp32", -23.39, 24.0),
    bound("phi lora autocast", -20.06, 21.0),
    bound("phi lora fp32", -28.27, 29.0),
    bound("qwen3 dora autocast", -1.34, 2.0),
    bound("qwen3 dora fp32", 0.04, 1.0),
    bound("qwen3 full autocast", 0.00, 1.0),
    bound("qwen3 full fp32", 0.00, 1.0),
    bound("qwen3 lora autocast", -2.25, 3.0),
    bound("qwen3 lora fp32", 0.00, 1.0),
    bound("qwen3_moe full autocast", -17.16, 18.0),
    bound("qwen3_moe full fp32", -8.26, 9.0),
    bound("qwen3_moe lora autocast", -34.13, 35.0),
    bound("qwen3_moe lora fp32", -21.19, 22.0),
];

#[test]
fn family_records_have_exact_state_and_bounded_activations() {
    let records = parse_records(FAMILIES).unwrap();
    assert_eq!(records.len(), 164);
    let mut worst = Worst::default();
    for r in &records {
        let e = predict(r).unwrap();
        // Known gap: peft's `ParamWrapper` keeps one lora_A/lora_B per layer on fused experts,
        // ftbudget counts one per expert, so AdamW's step counters (4 B each) are over-counted
        // on LoRA of MoE models; every other state byte is exact.
        let moe_lora = r.regime != "full"
            && (r.shape.family.contains("moe") || r.shape.family == "deepseek_v3");
        if moe_lora {
            assert_eq!(e.weights, r.params.total_bytes, "{} weights", r.id);
            assert_eq!(e.gradients, r.grads.bytes, "{} gradients", r.id);
            assert_eq!(
                e.detail.optimizer_states, r.optimizer.state_bytes_excl_step,
                "{} optimizer states",
                r.id
            );
            assert!(e.detail.step_counters >= r.optimizer.step_bytes, "{}", r.id);
        } else {
            common::assert_state_buckets_exact(r, &e);
        }
        let group = format!("{} {} {}", r.shape.family, regime_kind(r), precision(r));
        worst.add(group, activation_error(r, &e), &r.id);
    }
    worst.check("activations", ACTIVATIONS);
}

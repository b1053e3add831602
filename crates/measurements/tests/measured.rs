//! ftbudget against measured PyTorch training steps without checkpointing or dropout
//! (`measured_memory.json`, the 180 records the per-operation activation model was fitted to, and
//! `measured_memory_extra.json`, 180 more that later corrections were checked on): weights,
//! gradients, optimizer state and autocast's weight casts exactly, activations within each
//! group's recorded bound.

mod common;

use common::{Bound, Worst, bound, regime_kind};
use ftbudget_measurements::{activation_error, parse_records, predict};

const MEASURED: &str = include_str!("../../../fixtures/memory/measured_memory.json");
const EXTRA: &str = include_str!("../../../fixtures/memory/measured_memory_extra.json");

/// Worst activation error per family, regime and attention implementation (fp32 and autocast,
/// every shape and rank together), and the bound: 1% where the model is within 0.5%, else the
/// worst rounded up past half a point.
///
/// Known gaps: GPT-2 with eager attention at batch 1 x 16 (the smallest step, where fixed costs
/// the model leaves out weigh most: -6.3%, exact at 4 x 64); DoRA on GPT-2 with eager attention
/// at the smallest shapes (-1.1%).
#[allow(clippy::approx_constant)] // -6.28 is a measured error in percent, not tau
const ACTIVATIONS: &[Bound] = &[
    bound("gpt2 dora eager", -1.09, 2.0),
    bound("gpt2 dora sdpa", 0.04, 1.0),
    bound("gpt2 full eager", -6.28, 7.0),
    bound("gpt2 full sdpa", 0.00, 1.0),
    bound("gpt2 lora eager", -6.34, 7.0),
    bound("gpt2 lora sdpa", 0.00, 1.0),
    bound("llama dora eager", 0.08, 1.0),
    bound("llama dora sdpa", 0.08, 1.0),
    bound("llama full eager", 0.00, 1.0),
    bound("llama full sdpa", 0.00, 1.0),
    bound("llama lora eager", 0.00, 1.0),
    bound("llama lora sdpa", 0.00, 1.0),
    bound("mistral dora eager", 0.04, 1.0),
    bound("mistral dora sdpa", 0.04, 1.0),
    bound("mistral full eager", 0.00, 1.0),
    bound("mistral full sdpa", 0.00, 1.0),
    bound("mistral lora eager", 0.00, 1.0),
    bound("mistral lora sdpa", 0.00, 1.0),
    bound("qwen2 dora eager", 0.07, 1.0),
    bound("qwen2 dora sdpa", 0.07, 1.0),
    bound("qwen2 full eager", 0.00, 1.0),
    bound("qwen2 full sdpa", 0.00, 1.0),
    bound("qwen2 lora eager", 0.00, 1.0),
    bound("qwen2 lora sdpa", 0.00, 1.0),
];

#[test]
fn every_measured_record_matches() {
    let mut records = parse_records(MEASURED).unwrap();
    assert_eq!(records.len(), 180);
    records.extend(parse_records(EXTRA).unwrap());
    assert_eq!(records.len(), 360);
    let mut worst = Worst::default();
    for r in &records {
        let e = predict(r).unwrap();
        common::assert_state_buckets_exact(r, &e);
        assert_eq!(
            e.weight_casts, r.activations.weight_cast_bytes_dedup,
            "{} weight casts",
            r.id
        );
        let group = format!(
            "{} {} {}",
            r.shape.family,
            regime_kind(r),
            r.attn_implementation_used
        );
        worst.add(group, activation_error(r, &e), &r.id);
    }
    worst.check("activations", ACTIVATIONS);
}

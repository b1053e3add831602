//! ftbudget's step timeline under the techniques people use to fit, against the peaks PyTorch's
//! `MemTracker` measured over two Trainer-like steps (`fixtures/memory/measured_peak_techniques.json`,
//! `tools/measure-peak/measure_techniques.py`): torchtune's chunked cross-entropy, Liger's fused
//! linear cross-entropy (its `LigerFusedLinearCrossEntropyFunction` in plain torch, allocation for
//! allocation), the optimizer stepped in the backward, activation offloading (torchtune's
//! `OffloadActivations`; the device bytes, and the host copies beside ftbudget's host RAM figure)
//! and fused AdamW, on llama and qwen2 (tied) × full, LoRA r8 × fp32, bf16 autocast × two shapes;
//! offloading also with checkpointing, which torchtune's recipes require with it.
//!
//! What holds: every one of the 192 steps is within 5% (asserted: the issue asks 90% within 5%
//! and all within 10%). Fused AdamW and the optimizer in the backward are within 0.05% on every
//! step, with every category. The fused loss is within 0.7%: what it keeps (the gradients of the
//! hidden states and of a trained head), what it holds while it runs (one chunk's logits and
//! projections, autocast's copies of the head), and, once the loss no longer hides them, the
//! moments where the step then peaks without checkpointing: the last block's MLP backward, and
//! the forward inside the last block's down projection (peft's fp32 copy of its input under
//! autocast, the KV cache's fp32 keys, the embedding output). Offloading follows torchtune's
//! default on a GPU (`use_streams=True`): the GPU keeps the output head's and the loss's saved
//! tensors and the forward stash (the final norm's tensors); this CPU measurement runs without
//! streams (no stash), so the prediction is above it by the stash (up to +2.6%; LoRA with
//! checkpointing, whose stash is small, within 0.3%). The host
//! copies, every saved tensor once per save (a tensor several operations save, a weight's
//! transposed view), are exact on the batch 4 x 128 steps and at most 0.8% above on the others
//! (tensors under 1024 bytes, which torchtune keeps on the GPU).
//!
//! Categories: the fused loss's head gradient, made in the forward, stays an activation in
//! MemTracker's books after it becomes an untied head's `.grad`, and the timeline books it so.
//! The chunked loss's small full fine-tuning steps (b2s64) peak in the output head's backward,
//! after every chunk's cross-entropy backward: the logits' gradients, and three of the head's
//! weight gradients while autograd sums the first two chunks' out of place (measured alike with
//! `torch.profiler`'s allocator events, without MemTracker); the timeline has that moment (it
//! picked the loss before, 3.2% low, with other categories). Every category holding more than
//! 5% of the peak is within 10% on every step.

mod common;

use common::{Bound, StepTally, Worst, bound, paired_steps, relative_error};
use ftbudget_measurements::peak::{parse_peak_records, predict_peak};

const PEAKS: &str = include_str!("../../../fixtures/memory/measured_peak_techniques.json");

/// Worst error of the predicted peak per technique, regime and checkpointing (both steps, both
/// families, precisions and shapes together), and the bound: the worst rounded up past half a
/// point.
const PEAK: &[Bound] = &[
    bound("activation-offload full", 2.56, 3.0),
    bound("activation-offload full ckpt", 2.39, 3.0),
    bound("activation-offload lora", 1.32, 2.0),
    bound("activation-offload lora ckpt", -0.23, 1.0),
    bound("adamw-fused full", 0.05, 1.0),
    bound("adamw-fused lora", 0.03, 1.0),
    bound("loss-chunked full", 0.15, 1.0),
    bound("loss-chunked lora", -0.11, 1.0),
    bound("loss-fused full", -0.68, 1.0),
    bound("loss-fused lora", -0.22, 1.0),
    bound("optimizer-in-backward full", 0.05, 1.0),
    bound("optimizer-in-backward lora", 0.03, 1.0),
];

/// Categories beyond 10% of the measured one where they hold more than 5% of the peak (see the
/// module documentation).
const KNOWN_CATEGORY_MISSES: &[&str] = &[];

#[test]
fn predicted_peaks_match_memtracker_under_each_technique() {
    let records = parse_peak_records(PEAKS).unwrap();
    assert_eq!(records.len(), 96, "records");
    let mut worst = Worst::default();
    let mut host = Worst::default();
    let mut tally = StepTally::default();
    for r in &records {
        let e = predict_peak(r).unwrap();
        let technique = r.technique.as_deref().unwrap();
        let group = format!(
            "{technique} {}{}",
            r.regime.split('-').next().unwrap_or(""),
            if r.gradient_checkpointing {
                " ckpt"
            } else {
                ""
            }
        );
        for (name, measured, predicted) in paired_steps(r, &e) {
            let error = tally.add(&r.id, name, &predicted, measured, true);
            worst.add(group.clone(), error, &format!("{} {name}", r.id));
            if let Some(h) = measured.host_offload_bytes {
                assert!(
                    e.estimate.peak.host_offload_bytes >= h,
                    "{} {name}: host {} under the measured {h}",
                    r.id,
                    e.estimate.peak.host_offload_bytes
                );
                host.add(
                    group.clone(),
                    relative_error(e.estimate.peak.host_offload_bytes, h),
                    &format!("{} {name}", r.id),
                );
            }
        }
    }
    // The acceptance over the technique records: 90% of the steps within 5%, every
    // step within 10%.
    assert!(
        tally.within_5 * 10 >= tally.steps * 9,
        "{} of {} within 5%",
        tally.within_5,
        tally.steps
    );
    tally.assert_holds((192, 192), KNOWN_CATEGORY_MISSES);
    worst.check("peak", PEAK);
    host.check("host offload", HOST);
}

/// ftbudget's host RAM for offloaded activations against the largest sum of live host copies
/// (never below it: asserted above). Each saved tensor is counted once per save; the excess is
/// the tensors under torchtune's 1024 bytes (the `rsqrt` and ids of 64-token sequences), which
/// stay on the GPU.
const HOST: &[Bound] = &[
    bound("activation-offload full", 0.37, 1.0),
    bound("activation-offload full ckpt", 0.62, 1.0),
    bound("activation-offload lora", 0.52, 1.0),
    bound("activation-offload lora ckpt", 0.78, 1.0),
];

//! ftbudget's step timeline against the peaks PyTorch's `MemTracker` measured over two Trainer-like
//! steps (`fixtures/memory/measured_peak.json`, `tools/measure-peak`): llama, qwen2 (tied),
//! gpt2 (tied) and qwen3_moe × full, LoRA r8, DoRA r8 (llama) × fp32, autocast-bf16 and a bf16
//! base × eager, sdpa × checkpointing off/on × two shapes. The predicted peak of each step is
//! compared with the measured one, each group held to its recorded worst error. On the dense
//! families (llama, qwen2, gpt2: 336 steps) every step is within 5%, the phase is the measured
//! one, and every category holding more than 5% of the measured peak is within 10% of it; with
//! qwen3_moe too (432 of 432 steps). qwen3_moe's recomputed blocks are checked by kind and
//! position: its dense layer and its expert layers each keep their own saved bytes, weight casts
//! and later layers' gradients (a full fine-tuning step whose backward and optimizer moments are
//! 0.3% apart was predicted in the backward while the later gradients were an average share per
//! block). Checkpoints hold
//! the residual stream in its own dtype: 16-bit over a 16-bit frozen base under autocast (where
//! the RMSNorm's fp32 copy is then a tensor of its own), fp32 over an fp32 embedding (LoRA over
//! a bf16 base with checkpointing was 2.0% to 2.6% high when they were counted in fp32).
//!
//! Each step is measured under a fresh tracker (`tracked_steps` in `measure_peak.py`): MemTracker's
//! module hooks keep one hidden-state pair per checkpointed block alive from step to step under
//! reentrant checkpointing (`torch.profiler`'s allocator events grow with the tracker and stay
//! flat without it), which one tracker over both steps booked in the second step's activations:
//! LoRA and DoRA with checkpointing looked up to 4.4% under-predicted there. DoRA without
//! checkpointing keeps a run-to-run spread: the tracker's hooks leave reference cycles holding
//! tensors that Python's collector frees when it runs (none without the tracker), so its steps
//! peak up to 4% above the model; the allocator's own peak for the worst of them
//! (`llama-h64-l2-v2048|dora-r8|b2s64|fp32|eager`, step 2: 7,638,640 bytes, the tracker 7,951,856)
//! is within 0.2% of the prediction.

mod common;

use common::{Bound, StepTally, Worst, bound, paired_steps};
use ftbudget_measurements::peak::{parse_peak_records, predict_peak};

const PEAKS: &str = include_str!("../../../fixtures/memory/measured_peak.json");

/// Worst error of the predicted peak per family, regime and checkpointing (both steps, every
/// precision, attention kernel and shape together), and the bound: 1% where the model is within
/// 0.5%, else the worst rounded up past half a point.
///
/// LoRA on qwen3_moe's fused experts keeps each layer's merged expert weights (`W + s B A`, one
/// `baddbmm` in the weights' dtype) and, over a base in another dtype, the two factors cast to
/// it; its dense MLP layers are not adapted (peft's all-linear), so their inputs are not kept
/// (counting them over-predicted by up to 9%). The experts' grouped matmuls run outside
/// autocast: no weight casts. Checkpointed qwen3_moe peaks inside the MLP
/// backward of a recomputed block (dense or experts) with the later blocks' gradients alive,
/// which the timeline's recompute moment models (it was up to 12% low before).
const PEAK: &[Bound] = &[
    bound("gpt2 full ckpt", 0.08, 1.0),
    bound("gpt2 full no-ckpt", 0.11, 1.0),
    bound("gpt2 lora ckpt", -0.90, 1.5),
    bound("gpt2 lora no-ckpt", 1.58, 3.0),
    bound("llama dora ckpt", 0.11, 1.0),
    bound("llama dora no-ckpt", -4.11, 5.0),
    bound("llama full ckpt", 0.14, 1.0),
    bound("llama full no-ckpt", 0.13, 1.0),
    bound("llama lora ckpt", 0.11, 1.0),
    bound("llama lora no-ckpt", 0.11, 1.0),
    bound("qwen2 full ckpt", 0.19, 1.0),
    bound("qwen2 full no-ckpt", 0.16, 1.0),
    bound("qwen2 lora ckpt", 0.15, 1.0),
    bound("qwen2 lora no-ckpt", 0.13, 1.0),
    bound("qwen3_moe full ckpt", -1.26, 2.0),
    bound("qwen3_moe full no-ckpt", 0.23, 1.0),
    bound("qwen3_moe lora ckpt", -0.92, 1.5),
    bound("qwen3_moe lora no-ckpt", 0.18, 1.0),
];

/// Categories beyond 10% of the measured one where they hold more than 5% of the peak: none.
const KNOWN_CATEGORY_MISSES: &[&str] = &[];

#[test]
fn predicted_peaks_match_memtracker() {
    let records = parse_peak_records(PEAKS).unwrap();
    assert_eq!(records.len(), 216, "records");
    let mut worst = Worst::default();
    let mut all = StepTally::default();
    let mut dense = StepTally::default();
    for r in &records {
        let e = predict_peak(r).unwrap();
        let moe = r.shape.family.ends_with("_moe");
        let group = format!(
            "{} {} {}",
            r.shape.family,
            r.regime.split('-').next().unwrap_or(""),
            if r.gradient_checkpointing {
                "ckpt"
            } else {
                "no-ckpt"
            }
        );
        for (name, measured, predicted) in paired_steps(r, &e) {
            // Phases and categories are checked on every family.
            let error = all.add(&r.id, name, &predicted, measured, true);
            if !moe {
                dense.add(&r.id, name, &predicted, measured, false);
            }
            worst.add(group.clone(), error, &format!("{} {name}", r.id));
        }
    }
    // Every step of the dense families is within 5%; with the MoE records too.
    assert_eq!(
        (dense.within_5, dense.steps),
        (336, 336),
        "dense steps within 5%"
    );
    all.assert_holds((432, 432), KNOWN_CATEGORY_MISSES);
    // Every step peaks in the phase measured.
    assert!(
        all.phase_misses.is_empty(),
        "phases: {:#?}",
        all.phase_misses
    );
    worst.check("peak", PEAK);
}

//! ftbudget's step timeline under the techniques people use to fit, against the peaks PyTorch's
//! `MemTracker` measured over two Trainer-like steps (`fixtures/memory/measured_peak_techniques.json`,
//! `tools/measure-peak/measure_techniques.py`): torchtune's chunked cross-entropy, a Liger-style
//! fused linear cross-entropy, the optimizer stepped in the backward, activation offloading
//! (torchtune's hooks; the device bytes, and the host bytes beside ftbudget's host RAM figure)
//! and fused AdamW, on llama and qwen2 (tied) × full, LoRA r8 × fp32, bf16 autocast × two shapes.
//!
//! What holds: fused AdamW and the optimizer in the backward are within 0.05% on every step, with
//! every category. Known gaps, recorded here rather than hidden: the fused loss is
//! under-predicted by up to 15% (the measured backward holds the hidden states' gradient times
//! the loss's gradient and the fp32 row transients beside the saved gradient, which the timeline
//! does not book), and activation offloading is over-predicted by up to 34% (the timeline keeps
//! one block's share of the saved bytes on the device, `1/L`: half of them on these 2-layer
//! models, while torchtune's hooks without streams keep none between a tensor's save and its
//! unpack); its host bytes are under-predicted by about 75% (each saved tensor is copied on its
//! own, views of one storage included, while ftbudget counts the saved bytes once). The category
//! check skips those two techniques.

mod common;

use common::{Bound, Worst, bound, categories, measured_categories, relative_error};
use ftbudget_core::memory::StepPeak;
use ftbudget_measurements::peak::{parse_peak_records, predict_peak};

const PEAKS: &str = include_str!("../../../fixtures/memory/measured_peak_techniques.json");

/// Worst error of the predicted peak per technique and regime (both steps, both families,
/// precisions and shapes together), and the bound: the worst rounded up past half a point.
const PEAK: &[Bound] = &[
    bound("activation-offload full", 33.90, 34.0),
    bound("activation-offload lora", 30.27, 31.0),
    bound("adamw-fused full", 0.05, 1.0),
    bound("adamw-fused lora", 0.03, 1.0),
    bound("loss-chunked full", -3.24, 4.0),
    bound("loss-chunked lora", -0.11, 1.0),
    bound("loss-fused full", -14.59, 15.0),
    bound("loss-fused lora", -11.20, 12.0),
    bound("optimizer-in-backward full", 0.05, 1.0),
    bound("optimizer-in-backward lora", 0.03, 1.0),
];

/// Categories beyond 10% of the measured one where they hold more than 5% of the peak (the fused
/// loss and offloading not checked, see above). The chunked loss's small steps (b2s64, full
/// fine-tuning) peak at two moments of nearly the same size: the prediction picks the loss (or
/// the optimizer step), the measurement a moment of the backward, within 3.3% of each other, so
/// the categories are those of different moments.
const KNOWN_CATEGORY_MISSES: &[&str] = &[
    "llama-h64-l2-v2048|full|b2s64|fp32|sdpa|loss-chunked step 1 gradients: predicted 1418496, measured 894208",
    "llama-h64-l2-v2048|full|b2s64|fp32|sdpa|loss-chunked step 1 temporaries: predicted 0, measured 524288",
    "llama-h64-l2-v2048|full|b2s64|fp32|sdpa|loss-chunked step 2 activations: predicted 3523076, measured 1415688",
    "llama-h64-l2-v2048|full|b2s64|fp32|sdpa|loss-chunked step 2 temporaries: predicted 0, measured 2367488",
    "llama-h64-l2-v2048|full|b2s64|autocast-bf16|sdpa|loss-chunked step 1 gradients: predicted 1418496, measured 894208",
    "llama-h64-l2-v2048|full|b2s64|autocast-bf16|sdpa|loss-chunked step 1 temporaries: predicted 0, measured 524288",
    "qwen2-h64-l2-tied|full|b2s64|fp32|sdpa|loss-chunked step 2 activations: predicted 3326468, measured 1743368",
    "qwen2-h64-l2-tied|full|b2s64|fp32|sdpa|loss-chunked step 2 temporaries: predicted 0, measured 1777664",
];

#[test]
fn predicted_peaks_match_memtracker_under_each_technique() {
    let records = parse_peak_records(PEAKS).unwrap();
    assert_eq!(records.len(), 80, "records");
    let mut worst = Worst::default();
    let mut host = Worst::default();
    let (mut steps_total, mut within_5) = (0usize, 0usize);
    let mut beyond_10 = Vec::new();
    let mut category_misses = Vec::new();
    let categories_checked = |t: &str| !matches!(t, "loss-fused" | "activation-offload");
    for r in &records {
        let e = predict_peak(r).unwrap();
        let technique = r.technique.as_deref().unwrap();
        let group = format!("{technique} {}", r.regime.split('-').next().unwrap_or(""));
        for ((name, measured), predicted) in [("step 1", &r.peak.step1), ("step 2", &r.peak.step2)]
            .into_iter()
            .zip([e.first, e.steady])
        {
            let StepPeak {
                bytes, by_category, ..
            } = predicted;
            let error = relative_error(bytes, measured.peak_bytes);
            steps_total += 1;
            if error.abs() <= 0.05 {
                within_5 += 1;
            }
            if error.abs() > 0.10 {
                beyond_10.push(format!("{} {name}: {:+.2}%", r.id, 100.0 * error));
            }
            worst.add(group.clone(), error, &format!("{} {name}", r.id));
            let m = measured_categories(&measured.by_category);
            for ((cat, p), (_, mb)) in categories(&by_category).into_iter().zip(categories(&m)) {
                if categories_checked(technique)
                    && mb * 20 > measured.peak_bytes
                    && relative_error(p, mb).abs() > 0.10
                {
                    category_misses.push(format!(
                        "{} {name} {cat}: predicted {p}, measured {mb}",
                        r.id
                    ));
                }
            }
            if let Some(h) = measured.host_offload_bytes {
                host.add(
                    group.clone(),
                    relative_error(e.estimate.peak.host_offload_bytes, h),
                    &format!("{} {name}", r.id),
                );
            }
        }
    }
    // The acceptance (every step within 10%, 90% within 5%) holds for the techniques
    // other than the fused loss and offloading; the steps beyond 10% are theirs. 115 of the 160
    // steps are within 5%: all 96 of the other three techniques, 19 of the fused loss's and
    // offloading's 64.
    assert!(
        beyond_10
            .iter()
            .all(|m| m.contains("loss-fused") || m.contains("activation-offload")),
        "beyond 10%: {beyond_10:#?}"
    );
    assert_eq!((within_5, steps_total), (115, 160), "steps within 5%");
    assert_eq!(
        category_misses, KNOWN_CATEGORY_MISSES,
        "categories beyond 10% of the measured"
    );
    worst.check("peak", PEAK);
    host.check("host offload", HOST);
}

/// ftbudget's host RAM for offloaded activations against the largest sum of live host copies.
const HOST: &[Bound] = &[
    bound("activation-offload full", -74.24, 75.0),
    bound("activation-offload lora", -75.90, 76.0),
];

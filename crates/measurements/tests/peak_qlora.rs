//! ftbudget's QLoRA step timeline against the peaks PyTorch's `MemTracker` measured over two
//! Trainer-like steps on a bitsandbytes 4-bit base (`fixtures/memory/measured_peak_qlora.json`,
//! `tools/measure-peak/measure_qlora.py`): llama and qwen2 (tied, biased q/k/v) loaded in NF4
//! with and without double quantization, LoRA r8 all-linear × fp32 (compute dtype fp32) and bf16
//! autocast (loaded in bf16, compute dtype bf16), each prepared with
//! `prepare_model_for_kbit_training` as QLoRA recipes do, and bf16 autocast as loaded (not
//! prepared) × eager, sdpa × checkpointing off/on × two shapes. ftbudget is given the load dtype
//! as `--base-dtype` and the record's preparation as the regime's `prepare`: the prepared bf16
//! records are predicted from a bf16 base that the preparation upcasts.
//!
//! qwen3_moe (48 records, the same grid): bitsandbytes swaps `nn.Linear` modules only, so the
//! fused 3-D experts and the router stay as loaded (bf16, or fp32 once prepared: the weights are
//! exact; ftbudget had counted the experts in NF4, 4 to 8 times too small); every step is within
//! 1%, in the measured phase, every category within 10%. Prepared with checkpointing, peft's
//! `prepare_model_for_kbit_training` turns checkpointing on reentrant, which keeps a recomputed
//! block's output alive through its backward (`Checkpointing::Reentrant`: those steps held 11%
//! more temporaries than non-reentrant checkpointing has). Without checkpointing the prepared
//! autocast steps peak in the loss, where the model's output still holds the final hidden
//! states and the KV cache (fp32 keys and values over the 4-bit Linears' fp32 outputs, which
//! sdpa's bf16 casts do not share).
//!
//! The weights are exact to the byte: the packed 4-bit data, the quant states (absmax,
//! codebooks, nested absmax and offset), the embeddings, norms and lm_head (fp32 where prepared,
//! bf16 as loaded), and qwen2's q/k/v biases, which `Linear4bit` casts to the compute dtype in
//! its first forward. Under autocast the 4-bit Linears return their input's dtype, fp32 over the
//! prepared fp32 stream, so the MLP keeps fp32 (a model keeping bf16 there was 4% to 10% low);
//! as loaded the stream and the MLP are bf16. Without checkpointing every step is within 0.05%
//! (prepared) and 0.13% (as loaded), every category within 10%, in the measured phase; with
//! checkpointing within 0.03% (prepared) and 0.16% (as loaded: the checkpoints held in the bf16
//! stream's dtype; counted in fp32 they were up to 2.7% high). Each step is measured under a
//! fresh tracker: one tracker over both steps kept booking the first step's checkpointed inputs
//! (and, over the 4-bit base, 4,352 bytes per sequence and eager attention's fp32 mask), which
//! its hooks keep alive, in the second step, which then looked up to 4.7% under-predicted (see
//! `peak.rs`).

mod common;

use common::{Bound, StepTally, Worst, bound, paired_steps, relative_error};
use ftbudget_measurements::peak::{parse_peak_records, predict_peak};

const PEAKS: &str = include_str!("../../../fixtures/memory/measured_peak_qlora.json");

/// Worst error of the predicted peak per family, double quantization and checkpointing (both
/// steps, both precisions, attention kernels and shapes together), and the bound: 1% where the
/// model is within 0.5%, else the worst rounded up past half a point.
const PEAK: &[Bound] = &[
    bound("llama qlora-r8 as-loaded ckpt", 0.12, 1.0),
    bound("llama qlora-r8 as-loaded no-ckpt", 0.11, 1.0),
    bound("llama qlora-r8 prepared ckpt", 0.02, 1.0),
    bound("llama qlora-r8 prepared no-ckpt", 0.02, 1.0),
    bound("llama qlora-r8-dq as-loaded ckpt", 0.12, 1.0),
    bound("llama qlora-r8-dq as-loaded no-ckpt", 0.11, 1.0),
    bound("llama qlora-r8-dq prepared ckpt", 0.02, 1.0),
    bound("llama qlora-r8-dq prepared no-ckpt", 0.02, 1.0),
    bound("qwen2 qlora-r8 as-loaded ckpt", 0.16, 1.0),
    bound("qwen2 qlora-r8 as-loaded no-ckpt", 0.13, 1.0),
    bound("qwen2 qlora-r8 prepared ckpt", 0.03, 1.0),
    bound("qwen2 qlora-r8 prepared no-ckpt", 0.03, 1.0),
    bound("qwen2 qlora-r8-dq as-loaded ckpt", 0.16, 1.0),
    bound("qwen2 qlora-r8-dq as-loaded no-ckpt", 0.13, 1.0),
    bound("qwen2 qlora-r8-dq prepared ckpt", 0.03, 1.0),
    bound("qwen2 qlora-r8-dq prepared no-ckpt", 0.03, 1.0),
    bound("qwen3_moe qlora-r8 as-loaded ckpt", -0.61, 1.5),
    bound("qwen3_moe qlora-r8 as-loaded no-ckpt", 0.18, 1.0),
    bound("qwen3_moe qlora-r8 prepared ckpt", 0.83, 1.5),
    bound("qwen3_moe qlora-r8 prepared no-ckpt", -0.09, 1.0),
    bound("qwen3_moe qlora-r8-dq as-loaded ckpt", -0.61, 1.5),
    bound("qwen3_moe qlora-r8-dq as-loaded no-ckpt", 0.18, 1.0),
    bound("qwen3_moe qlora-r8-dq prepared ckpt", 0.82, 1.5),
    bound("qwen3_moe qlora-r8-dq prepared no-ckpt", -0.09, 1.0),
];

/// Categories beyond 10% of the measured one where they hold more than 5% of the peak.
const KNOWN_CATEGORY_MISSES: &[&str] = &[];

#[test]
fn predicted_qlora_peaks_match_memtracker() {
    let records = parse_peak_records(PEAKS).unwrap();
    assert_eq!(records.len(), 144, "records");
    let mut worst = Worst::default();
    let mut tally = StepTally::default();
    for r in &records {
        let e = predict_peak(r).unwrap();
        assert!(
            r.params.quant_state_bytes.is_some_and(|b| b > 0),
            "{}",
            r.id
        );
        assert_eq!(e.estimate.weights, r.params.total_bytes, "{} weights", r.id);
        assert_eq!(
            e.estimate.detail.optimizer_states, r.optimizer.state_bytes_excl_step,
            "{} optimizer state",
            r.id
        );
        let prepared = r
            .quantization
            .as_ref()
            .is_some_and(|q| q.prepare_model_for_kbit_training);
        let group = format!(
            "{} {} {} {}",
            r.shape.family,
            r.regime,
            if prepared { "prepared" } else { "as-loaded" },
            if r.gradient_checkpointing {
                "ckpt"
            } else {
                "no-ckpt"
            }
        );
        // Phases and categories are checked on every family (as in `peak.rs`).
        for (name, measured, predicted) in paired_steps(r, &e) {
            let error = tally.add(&r.id, name, &predicted, measured, true);
            worst.add(group.clone(), error, &format!("{} {name}", r.id));
        }
    }
    tally.assert_holds((288, 288), KNOWN_CATEGORY_MISSES);
    let phase_misses = tally.phase_misses;
    assert!(phase_misses.is_empty(), "phases: {phase_misses:#?}");
    worst.check("peak", PEAK);
}

/// The preparation is what the prepared records hold: planned as loaded (`prepare=false`, the
/// bf16 the model was loaded in) the bf16 records' weights come out short by the embeddings',
/// norms' and lm_head's upcast, and every peak more than 4% low (4.8% to 18%: the fp32 stream,
/// norms, MLP and the lm_head's cast are missing too).
#[test]
fn prepared_records_are_missed_without_the_preparation() {
    let records = parse_peak_records(PEAKS).unwrap();
    let mut prepared_bf16 = 0;
    for r in &records {
        let Some(q) = r.quantization.as_ref() else {
            continue;
        };
        if !q.prepare_model_for_kbit_training || q.load_dtype != "bfloat16" {
            continue;
        }
        prepared_bf16 += 1;
        let mut as_loaded = r.clone();
        if let Some(q) = as_loaded.quantization.as_mut() {
            q.prepare_model_for_kbit_training = false;
        }
        let e = predict_peak(&as_loaded).unwrap();
        assert!(
            e.estimate.weights < r.params.total_bytes,
            "{} weights",
            r.id
        );
        let error = relative_error(e.estimate.peak.bytes, r.measured_peak());
        assert!(error < -0.04, "{} as loaded: {:+.2}%", r.id, 100.0 * error);
    }
    assert_eq!(prepared_bf16, 48, "prepared bf16 records");
}

//! ftbudget against measured PyTorch training steps with gradient checkpointing and dropout:
//! weights, gradients and optimizer state exactly; activations and autocast's weight casts
//! within each group's recorded bound; under checkpointing, the moment the step peaks. With
//! checkpointing the measured figures are those at the peak over the step of the bytes kept for
//! backward (`measured_activations`, `measured_weight_casts`).
//!
//! `measured_memory_ckpt_dropout.json` is the grid the checkpointing and dropout terms were
//! derived from; `measured_memory_ckpt_dropout_heldout.json` was measured afterwards on other
//! models, shapes, rank and dropout probability, and is checked against its own table: the
//! model's error on records it was not fitted to.

mod common;

use common::{Bound, Worst, bound, checkpointing, dropout, precision, regime_kind, relative_error};
use ftbudget_measurements::{
    MemoryRecord, activation_error, measured_weight_casts, parse_records, predict,
};

const CKPT_DROPOUT: &str =
    include_str!("../../../fixtures/memory/measured_memory_ckpt_dropout.json");
const HELD_OUT: &str =
    include_str!("../../../fixtures/memory/measured_memory_ckpt_dropout_heldout.json");

/// Fitted grid: worst activation error per family, regime, precision and checkpointing (eager
/// and sdpa, dropout 0 and 0.1, both shapes together), and the bound: 1% where the model is
/// within 0.5%, else the worst rounded up past half a point. DoRA under checkpointing
/// under-predicts (-1.5% at most: its weight-norm temporaries are counted for the largest module
/// only), and DoRA with dropout under autocast over-predicts (+3.2%).
const ACTIVATIONS_FITTED: &[Bound] = &[
    bound("gpt2 dora autocast ckpt", 3.18, 4.0),
    bound("gpt2 dora autocast no-ckpt", 2.67, 4.0),
    bound("gpt2 dora fp32 ckpt", -0.66, 2.0),
    bound("gpt2 dora fp32 no-ckpt", 0.01, 1.0),
    bound("gpt2 full autocast ckpt", 0.00, 1.0),
    bound("gpt2 full autocast no-ckpt", 0.00, 1.0),
    bound("gpt2 full fp32 ckpt", 0.00, 1.0),
    bound("gpt2 full fp32 no-ckpt", 0.00, 1.0),
    bound("gpt2 lora autocast ckpt", -0.08, 1.0),
    bound("gpt2 lora autocast no-ckpt", 0.00, 1.0),
    bound("gpt2 lora fp32 ckpt", -0.05, 1.0),
    bound("gpt2 lora fp32 no-ckpt", 0.00, 1.0),
    bound("llama dora autocast ckpt", -1.45, 2.0),
    bound("llama dora autocast no-ckpt", 0.04, 1.0),
    bound("llama dora fp32 ckpt", -0.83, 2.0),
    bound("llama dora fp32 no-ckpt", 0.02, 1.0),
    bound("llama full autocast ckpt", -0.05, 1.0),
    bound("llama full autocast no-ckpt", 0.00, 1.0),
    bound("llama full fp32 ckpt", -0.04, 1.0),
    bound("llama full fp32 no-ckpt", 0.00, 1.0),
    bound("llama lora autocast ckpt", -0.06, 1.0),
    bound("llama lora autocast no-ckpt", 0.00, 1.0),
    bound("llama lora fp32 ckpt", -0.04, 1.0),
    bound("llama lora fp32 no-ckpt", 0.00, 1.0),
    bound("mistral dora autocast ckpt", -1.31, 2.0),
    bound("mistral dora autocast no-ckpt", 0.02, 1.0),
    bound("mistral dora fp32 ckpt", -0.73, 2.0),
    bound("mistral dora fp32 no-ckpt", 0.01, 1.0),
    bound("mistral full autocast ckpt", -0.04, 1.0),
    bound("mistral full autocast no-ckpt", 0.00, 1.0),
    bound("mistral full fp32 ckpt", -0.03, 1.0),
    bound("mistral full fp32 no-ckpt", 0.00, 1.0),
    bound("mistral lora autocast ckpt", -0.04, 1.0),
    bound("mistral lora autocast no-ckpt", 0.00, 1.0),
    bound("mistral lora fp32 ckpt", -0.04, 1.0),
    bound("mistral lora fp32 no-ckpt", 0.00, 1.0),
];

/// Held out: the same grouping. The file's 72 records without checkpointing or dropout repeat
/// configurations of `measured.rs` (experiment 30 leaves them out of its held-out split); the
/// others were never used to tune the model. Known gaps: DoRA on GPT-2 under checkpointing at
/// the small shape (-24% under autocast, -13% in fp32; -0.3% at batch 4 x 64): while the
/// recomputation builds a Conv1D module's weight norm, that module's `eye(in)` graph and its
/// transposed fp32 weight are alive together, and the regime terms do not say which module a
/// fixed term belongs to, so the model keeps only the largest single term. GPT-2 eager at batch
/// 1 x 16 (-6.3%, as in `measured.rs`); DoRA under checkpointing on the other families (-5.1% at
/// most).
const ACTIVATIONS_HELD_OUT: &[Bound] = &[
    bound("gpt2 dora autocast ckpt", -23.62, 25.0),
    bound("gpt2 dora autocast no-ckpt", 2.31, 3.0),
    bound("gpt2 dora fp32 ckpt", -13.30, 14.0),
    bound("gpt2 dora fp32 no-ckpt", -0.65, 2.0),
    bound("gpt2 full autocast ckpt", 0.00, 1.0),
    bound("gpt2 full autocast no-ckpt", -5.50, 7.0),
    bound("gpt2 full fp32 ckpt", 0.00, 1.0),
    bound("gpt2 full fp32 no-ckpt", -6.24, 7.0),
    bound("gpt2 lora autocast ckpt", -0.08, 1.0),
    bound("gpt2 lora autocast no-ckpt", -5.60, 7.0),
    bound("gpt2 lora fp32 ckpt", -0.05, 1.0),
    bound("gpt2 lora fp32 no-ckpt", -6.32, 7.0),
    bound("llama dora autocast ckpt", -4.53, 6.0),
    bound("llama dora autocast no-ckpt", 0.07, 1.0),
    bound("llama dora fp32 ckpt", -2.71, 4.0),
    bound("llama dora fp32 no-ckpt", 0.04, 1.0),
    bound("llama full autocast ckpt", -0.13, 1.0),
    bound("llama full autocast no-ckpt", 0.00, 1.0),
    bound("llama full fp32 ckpt", -0.12, 1.0),
    bound("llama full fp32 no-ckpt", 0.00, 1.0),
    bound("llama lora autocast ckpt", -0.15, 1.0),
    bound("llama lora autocast no-ckpt", 0.00, 1.0),
    bound("llama lora fp32 ckpt", -0.13, 1.0),
    bound("llama lora fp32 no-ckpt", 0.00, 1.0),
    bound("qwen2 dora autocast ckpt", -3.52, 5.0),
    bound("qwen2 dora autocast no-ckpt", 2.27, 3.0),
    bound("qwen2 dora fp32 ckpt", -1.94, 3.0),
    bound("qwen2 dora fp32 no-ckpt", 0.04, 1.0),
    bound("qwen2 full autocast ckpt", -0.11, 1.0),
    bound("qwen2 full autocast no-ckpt", 0.00, 1.0),
    bound("qwen2 full fp32 ckpt", -0.11, 1.0),
    bound("qwen2 full fp32 no-ckpt", 0.00, 1.0),
    bound("qwen2 lora autocast ckpt", -0.12, 1.0),
    bound("qwen2 lora autocast no-ckpt", 0.00, 1.0),
    bound("qwen2 lora fp32 ckpt", -0.12, 1.0),
    bound("qwen2 lora fp32 no-ckpt", 0.00, 1.0),
];

/// Weight casts: exact on every group not listed (all fp32 records, and autocast without
/// checkpointing or DoRA's dropout). Listed, per family, regime, checkpointing and dropout, the
/// worst error against the casts alive at the measured peak and its bound. Two known gaps of the
/// weight-cast bucket, which ignores checkpointing and dropout:
///
/// - Under checkpointing the backward recomputes one block at a time, so only that block's
///   casts are saved at once (full fine-tuning: the casts' own peak is the larger of one
///   block's and the lm_head's), while ftbudget keeps every layer's: it over-predicts by about
///   the number of layers (+4% to +550%, on these 2- to 4-layer models).
/// - Under autocast, peft's DoRA with dropout runs the base layer a second time on the dropped
///   input (`base_result=None`), so every adapted base weight is cast twice; ftbudget counts
///   one cast (-33% to -46%).
const WEIGHT_CASTS_FITTED: &[Bound] = &[
    bound("gpt2 dora ckpt dropout", 107.27, 108.0),
    bound("gpt2 dora ckpt no-dropout", 299.19, 300.0),
    bound("gpt2 dora no-ckpt dropout", -45.50, 47.0),
    bound("gpt2 full ckpt dropout", 308.46, 309.0),
    bound("gpt2 full ckpt no-dropout", 512.70, 514.0),
    bound("gpt2 lora ckpt dropout", 284.93, 286.0),
    bound("gpt2 lora ckpt no-dropout", 284.93, 286.0),
    bound("llama dora ckpt dropout", 4.03, 5.0),
    bound("llama dora ckpt no-dropout", 98.49, 99.0),
    bound("llama dora no-ckpt dropout", -45.46, 46.0),
    bound("llama full ckpt dropout", 117.78, 119.0),
    bound("llama full ckpt no-dropout", 117.78, 119.0),
    bound("llama lora ckpt dropout", 98.49, 99.0),
    bound("llama lora ckpt no-dropout", 98.49, 99.0),
    bound("mistral dora ckpt dropout", 57.11, 58.0),
    bound("mistral dora ckpt no-dropout", 200.44, 201.0),
    bound("mistral dora no-ckpt dropout", -36.40, 37.0),
    bound("mistral full ckpt dropout", 223.08, 224.0),
    bound("mistral full ckpt no-dropout", 223.08, 224.0),
    bound("mistral lora ckpt dropout", 200.44, 201.0),
    bound("mistral lora ckpt no-dropout", 200.44, 201.0),
];

/// Held out: the same gaps as [`WEIGHT_CASTS_FITTED`].
const WEIGHT_CASTS_HELD_OUT: &[Bound] = &[
    bound("gpt2 dora ckpt dropout", 155.12, 156.0),
    bound("gpt2 dora ckpt no-dropout", 315.20, 316.0),
    bound("gpt2 dora no-ckpt dropout", -45.95, 47.0),
    bound("gpt2 full ckpt dropout", 333.33, 334.0),
    bound("gpt2 full ckpt no-dropout", 550.00, 551.0),
    bound("gpt2 lora ckpt dropout", 307.75, 309.0),
    bound("gpt2 lora ckpt no-dropout", 307.75, 309.0),
    bound("llama dora ckpt dropout", 113.93, 115.0),
    bound("llama dora ckpt no-dropout", 298.44, 299.0),
    bound("llama dora no-ckpt dropout", -37.59, 39.0),
    bound("llama full ckpt dropout", 339.13, 340.0),
    bound("llama full ckpt no-dropout", 339.13, 340.0),
    bound("llama lora ckpt dropout", 307.21, 308.0),
    bound("llama lora ckpt no-dropout", 307.21, 308.0),
    bound("qwen2 dora ckpt dropout", 74.43, 75.0),
    bound("qwen2 dora ckpt no-dropout", 221.83, 223.0),
    bound("qwen2 dora no-ckpt dropout", -32.89, 34.0),
    bound("qwen2 full ckpt dropout", 125.00, 126.0),
    bound("qwen2 full ckpt no-dropout", 125.00, 126.0),
    bound("qwen2 lora ckpt dropout", 127.34, 128.0),
    bound("qwen2 lora ckpt no-dropout", 127.34, 128.0),
];

fn records() -> Vec<MemoryRecord> {
    parse_records(CKPT_DROPOUT).unwrap()
}

fn held_out() -> Vec<MemoryRecord> {
    parse_records(HELD_OUT).unwrap()
}

/// The fixtures are the grids `fixtures/memory/README.md` describes (a guard on the data the
/// bounds below were recorded on, not a test of ftbudget).
#[test]
fn the_fixtures_hold_the_documented_grid() {
    let records = records();
    // 3 models x 3 regimes x 2 attention x 2 precisions x 2 shapes x checkpointing x dropout.
    assert_eq!(records.len(), 288);
    assert_eq!(
        records.iter().filter(|r| r.gradient_checkpointing).count(),
        144
    );
    assert_eq!(records.iter().filter(|r| r.dropout == 0.1).count(), 144);
    assert!(records.iter().all(|r| r.activations.peak.is_some()));
    // Checkpointed steps peak in the backward, while the last block is recomputed, except where
    // the loss's fp32 log-softmax (`4 T V`) outweighs one block: mistral's 2048-token
    // vocabulary under autocast (`check` holds ftbudget to the same moment).
    let forward: Vec<&str> = records
        .iter()
        .filter(|r| r.gradient_checkpointing)
        .filter(|r| r.activations.peak.as_ref().unwrap().phase == "forward")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(forward.len(), 11, "{forward:#?}");
    assert!(
        forward
            .iter()
            .all(|id| id.starts_with("mistral") && id.contains("autocast")),
        "{forward:#?}"
    );
    let held_out = held_out();
    assert_eq!(held_out.len(), 288);
    assert!(held_out.iter().all(|r| r.activations.peak.is_some()));
}

/// Checks every record: exact weights, gradients and optimizer state; under checkpointing the
/// moment of the peak (at the forward's end the logits and loss are still held, in the backward
/// they are freed); activations and weight casts within their groups' bounds.
fn check(records: &[MemoryRecord], activations: &[Bound], weight_casts: &[Bound]) {
    let mut worst_activations = Worst::default();
    let mut worst_casts = Worst::default();
    let mut wrong_moment = Vec::new();
    for r in records {
        let e = predict(r).unwrap();
        common::assert_state_buckets_exact(r, &e);
        if r.gradient_checkpointing {
            let measured_forward = r.activations.peak.as_ref().unwrap().phase == "forward";
            let predicted_forward = e.detail.activations.logits_loss > 0;
            if measured_forward != predicted_forward {
                wrong_moment.push(r.id.clone());
            }
        }
        let group = format!(
            "{} {} {} {}",
            r.shape.family,
            regime_kind(r),
            precision(r),
            checkpointing(r)
        );
        worst_activations.add(group, activation_error(r, &e), &r.id);
        let cast_error = relative_error(e.weight_casts, measured_weight_casts(r));
        if cast_error != 0.0 {
            let group = format!(
                "{} {} {} {}",
                r.shape.family,
                regime_kind(r),
                checkpointing(r),
                dropout(r)
            );
            worst_casts.add(group, cast_error, &r.id);
        }
    }
    assert!(wrong_moment.is_empty(), "peak moment: {wrong_moment:#?}");
    worst_activations.check("activations", activations);
    worst_casts.check("weight casts", weight_casts);
}

#[test]
fn every_checkpointing_and_dropout_record_matches() {
    check(&records(), ACTIVATIONS_FITTED, WEIGHT_CASTS_FITTED);
}

/// Held out: qwen2-h64-l2-tied, llama-h96-l3-h6kv2-v1024, gpt2-e128-l4 x full, LoRA r4, DoRA r8
/// x eager/sdpa x fp32/autocast-bf16 x (1,16), (4,64) x checkpointing x dropout 0.05.
#[test]
fn held_out_records_match() {
    check(&held_out(), ACTIVATIONS_HELD_OUT, WEIGHT_CASTS_HELD_OUT);
}

//! The step timeline: live bytes by category through one training step, and its peak.
//!
//! The four buckets say where memory goes; what decides an out-of-memory error is the most bytes
//! alive at one moment. A step (PyTorch, the Trainer's order: forward with the loss inside,
//! the model output dropped, `loss.backward()`, `optimizer.step()`,
//! `zero_grad(set_to_none=True)`) is evaluated at the moments where the live sum can peak, each
//! split into PyTorch `MemTracker`'s categories: parameters, gradients, optimizer state (AdamW's
//! foreach temporaries included, as MemTracker books them), activations (saved tensors and
//! autocast's weight casts), temporaries (gradients of activations in flight) and the batch's
//! input ids. Between two moments the live sum moves monotonically (activations are freed layer by
//! layer while gradients appear), so the largest moment is the peak.
//!
//! Two steps are evaluated: the first, where the optimizer state does not exist until the
//! optimizer creates it, and a steady-state step, where it is alive throughout. With gradient
//! accumulation every micro-batch after the first runs with the gradients alive. Measured with
//! `MemTracker` in `fixtures/memory/measured_peak.json` (`tools/measure-peak`).
//!
//! No I/O, integer arithmetic only; the figures are the memory model's buckets rearranged, so the
//! peak costs a few additions on top of [`super::estimate_memory`].

use serde::Serialize;
use std::fmt;

/// Settings of the step that change the timeline but not the buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepSettings {
    /// Micro-batches per optimizer step (`gradient_accumulation_steps`), at least 1.
    pub grad_accum: u64,
}

impl Default for StepSettings {
    fn default() -> Self {
        StepSettings { grad_accum: 1 }
    }
}

impl StepSettings {
    /// The largest accumulation accepted.
    pub const MAX_GRAD_ACCUM: u64 = 1 << 20;
}

/// Where in the step a moment lies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// The model's forward up to the logits.
    #[default]
    Forward,
    /// From the logits to the loss (the fp32 copy of the logits and the log-softmax).
    Loss,
    /// `loss.backward()`, the recomputation of checkpointed blocks included.
    Backward,
    /// `optimizer.step()`.
    Optimizer,
    /// After `zero_grad(set_to_none=True)`.
    ZeroGrad,
}

impl StepPhase {
    pub const fn name(self) -> &'static str {
        match self {
            StepPhase::Forward => "forward",
            StepPhase::Loss => "loss",
            StepPhase::Backward => "backward",
            StepPhase::Optimizer => "optimizer",
            StepPhase::ZeroGrad => "zero_grad",
        }
    }
}

impl fmt::Display for StepPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first step (no optimizer state until the optimizer creates it) or a steady-state one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    #[default]
    First,
    Steady,
}

impl StepKind {
    pub const fn name(self) -> &'static str {
        match self {
            StepKind::First => "first",
            StepKind::Steady => "steady",
        }
    }
}

/// Live bytes by category at one moment (per GPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LiveBytes {
    /// Every parameter (trainable and frozen, quantized included) and fp32 master copies.
    pub parameters: u64,
    pub gradients: u64,
    /// Optimizer state and step counters, and the optimizer's own temporaries while it runs.
    pub optimizer: u64,
    /// Tensors saved for backward, the logits, and autocast's weight casts.
    pub activations: u64,
    /// Gradients of activations in flight during the backward.
    pub temporaries: u64,
    /// The batch's input ids (int64; the labels share them in the measured loop).
    pub inputs: u64,
}

impl LiveBytes {
    pub const fn total(&self) -> u64 {
        self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.temporaries
            + self.inputs
    }
}

/// One moment of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Moment {
    pub phase: StepPhase,
    /// What happens at that moment (`backward start`, ...).
    pub label: &'static str,
    pub live: LiveBytes,
}

/// The peak of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepPeak {
    pub bytes: u64,
    pub phase: StepPhase,
    pub by_category: LiveBytes,
}

/// The peak of live memory over the first and a steady-state step. Serialized as
/// `{bytes, phase, step, first_step_bytes, steady_step_bytes, by_category}`: `bytes` is the larger
/// of the two steps, `phase`, `step` and `by_category` say where it happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeakEstimate {
    pub bytes: u64,
    pub phase: StepPhase,
    pub step: StepKind,
    pub first_step_bytes: u64,
    pub steady_step_bytes: u64,
    pub by_category: LiveBytes,
    #[serde(skip)]
    pub first: StepPeak,
    #[serde(skip)]
    pub steady: StepPeak,
}

/// The figures the timeline is built from, all per GPU and already sharded: the memory model's
/// buckets and the activation model's parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepInputs {
    /// Model weights and master copies (the weights bucket).
    pub parameters: u64,
    /// All gradients of one step (the gradients bucket).
    pub gradients: u64,
    /// Optimizer state with its step counters (the optimizer bucket).
    pub optimizer_state: u64,
    /// What the optimizer allocates while it runs: AdamW's foreach step keeps one
    /// `sqrt(exp_avg_sq)` per parameter, in the state dtype (`torch._foreach_sqrt`).
    pub optimizer_temporaries: u64,
    /// Saved bytes alive when the loss's backward starts (the whole activation bucket without
    /// checkpointing; checkpoints, final norm and loss with it).
    pub activations_at_backward_start: u64,
    /// Saved bytes while the backward recomputes the last checkpointed block (0: none).
    pub activations_at_recompute: u64,
    /// Autocast's saved weight casts alive when the backward starts (all of them without
    /// checkpointing; with it only the lm_head's, the blocks' being recomputed later).
    pub weight_casts_at_backward_start: u64,
    /// The casts alive while the last block is recomputed (one block's).
    pub weight_casts_at_recompute: u64,
    /// Logit elements of one micro-batch (`batch x seq x vocab`); 0 when the activation model
    /// does not model the loss.
    pub logits: u64,
    /// Bytes per logit as the lm_head writes it (the compute dtype).
    pub logit_bytes: u64,
    /// The log-softmax and labels the loss saves (`4 T V + 8 T + 4`), inside the activations.
    pub loss_saved: u64,
    /// Gradients that exist when the last block is recomputed (the lm_head's and final norm's,
    /// when they are trained).
    pub head_gradients: u64,
    /// Gradients in flight while a recomputed block runs its backward.
    pub recompute_temporaries: u64,
    /// The input ids (`8 T`).
    pub inputs: u64,
    pub grad_accum: u64,
}

/// Moments of a step, in order. A checkpointed step adds the recomputation of the last block;
/// without checkpointing that moment repeats the backward's start.
pub const MOMENTS: usize = 7;

/// The moments of one step of `kind`, each documented with what it models:
///
/// - **forward end**: parameters, the optimizer state (steady step), gradients of earlier
///   micro-batches (accumulation), everything saved for backward but the loss's own tensors,
///   the weight casts, and the logits in the compute dtype (`c T V`);
/// - **loss**: adds the loss's saved log-softmax and labels, and the fp32 copy of the logits
///   that transformers' loss makes when the logits are 16-bit (`4 T V`);
/// - **backward start** (the peak of most fine-tuning steps): the model output is dropped, so
///   the logits are gone, every saved tensor is alive, and `nll_loss`'s gradient and the
///   log-softmax's gradient (`4 T V` each, fp32) are in flight: `+8 T V` temporaries;
/// - **recompute** (checkpointing): the checkpoints and the last block's recomputed tensors, the
///   head's gradients, and the block's gradients in flight;
/// - **backward end**: every saved tensor freed, every gradient of the step present (LoRA's
///   frozen weights have none: the gradients bucket counts trainable tensors only);
/// - **optimizer**: gradients, the full state (created now on the first step) and the optimizer's
///   temporaries;
/// - **zero_grad**: gradients set to `None`; parameters and state remain.
pub fn timeline(s: &StepInputs, kind: StepKind) -> [Moment; MOMENTS] {
    let state_before = match kind {
        StepKind::First => 0,
        StepKind::Steady => s.optimizer_state,
    };
    // The last micro-batch of an accumulating step runs with the earlier ones' gradients.
    let grads_before = if s.grad_accum > 1 { s.gradients } else { 0 };
    let base = LiveBytes {
        parameters: s.parameters,
        gradients: grads_before,
        optimizer: state_before,
        inputs: s.inputs,
        ..LiveBytes::default()
    };
    let logits_stored = s.logits * s.logit_bytes;
    let logits_fp32_copy = if s.logit_bytes == 4 { 0 } else { 4 * s.logits };
    let saved = s.activations_at_backward_start + s.weight_casts_at_backward_start;
    let forward_end = LiveBytes {
        activations: saved.saturating_sub(s.loss_saved) + logits_stored,
        ..base
    };
    let loss = LiveBytes {
        activations: saved + logits_stored + logits_fp32_copy,
        ..base
    };
    let backward_start = LiveBytes {
        activations: saved,
        temporaries: 8 * s.logits,
        ..base
    };
    let recompute = if s.activations_at_recompute > 0 {
        LiveBytes {
            activations: s.activations_at_recompute + s.weight_casts_at_recompute,
            gradients: grads_before.max(s.head_gradients),
            temporaries: s.recompute_temporaries,
            ..base
        }
    } else {
        backward_start
    };
    let backward_end = LiveBytes {
        gradients: s.gradients,
        ..base
    };
    let optimizer = LiveBytes {
        gradients: s.gradients,
        optimizer: s.optimizer_state + s.optimizer_temporaries,
        ..base
    };
    let zero_grad = LiveBytes {
        optimizer: s.optimizer_state,
        ..base
    };
    let moment = |phase, label, live| Moment { phase, label, live };
    [
        moment(StepPhase::Forward, "forward end", forward_end),
        moment(StepPhase::Loss, "loss", loss),
        moment(StepPhase::Backward, "backward start", backward_start),
        moment(StepPhase::Backward, "recompute last block", recompute),
        moment(StepPhase::Backward, "backward end", backward_end),
        moment(StepPhase::Optimizer, "optimizer step", optimizer),
        moment(StepPhase::ZeroGrad, "zero_grad", zero_grad),
    ]
}

/// The largest moment of a step (the earliest one on a tie).
#[inline]
pub fn step_peak(s: &StepInputs, kind: StepKind) -> StepPeak {
    let moments = timeline(s, kind);
    let mut best = StepPeak::default();
    for m in &moments {
        let bytes = m.live.total();
        if bytes > best.bytes {
            best = StepPeak {
                bytes,
                phase: m.phase,
                by_category: m.live,
            };
        }
    }
    best
}

/// The peak over the first and a steady-state step.
#[inline]
pub fn peak(s: &StepInputs) -> PeakEstimate {
    let first = step_peak(s, StepKind::First);
    let steady = step_peak(s, StepKind::Steady);
    let (step, at) = if steady.bytes > first.bytes {
        (StepKind::Steady, steady)
    } else {
        (StepKind::First, first)
    };
    PeakEstimate {
        bytes: at.bytes,
        phase: at.phase,
        step,
        first_step_bytes: first.bytes,
        steady_step_bytes: steady.bytes,
        by_category: at.by_category,
        first,
        steady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> StepInputs {
        StepInputs {
            parameters: 1000,
            gradients: 100,
            optimizer_state: 200,
            optimizer_temporaries: 100,
            activations_at_backward_start: 500,
            activations_at_recompute: 0,
            weight_casts_at_backward_start: 0,
            weight_casts_at_recompute: 0,
            logits: 10,
            logit_bytes: 2,
            loss_saved: 40 + 8,
            head_gradients: 0,
            recompute_temporaries: 0,
            inputs: 8,
            grad_accum: 1,
        }
    }

    /// Hand arithmetic: the steady step peaks when the backward starts, with the state alive:
    /// 1000 + 200 + 500 + 8 T V (80) + 8 = 1788; the first step has no state then (1588) but its
    /// optimizer step holds 1000 + 100 + 200 + 100 + 8 = 1408.
    #[test]
    fn steady_step_peaks_at_the_backward_start() {
        let p = peak(&inputs());
        assert_eq!(p.steady_step_bytes, 1788);
        assert_eq!(p.first_step_bytes, 1588);
        assert_eq!(
            (p.bytes, p.phase, p.step),
            (1788, StepPhase::Backward, StepKind::Steady)
        );
        assert_eq!(p.by_category.temporaries, 80);
        let m = timeline(&inputs(), StepKind::First);
        // The loss holds the bf16 logits (20) and their fp32 copy (40) beside the saved bytes.
        assert_eq!(m[1].live.total(), 1000 + 500 + 20 + 40 + 8);
        assert_eq!(m[5].live.total(), 1408);
    }

    /// Accumulation keeps the gradients alive through the next micro-batch's backward.
    #[test]
    fn accumulation_adds_the_gradients_to_the_backward() {
        let mut s = inputs();
        s.grad_accum = 4;
        assert_eq!(peak(&s).steady_step_bytes, 1788 + 100);
    }

    /// Full fine-tuning of a model whose state outweighs its activations peaks in the optimizer
    /// on the first step: parameters, gradients, state and temporaries.
    #[test]
    fn big_state_peaks_in_the_optimizer() {
        let mut s = inputs();
        s.gradients = 1000;
        s.optimizer_state = 2000;
        s.optimizer_temporaries = 1000;
        let p = peak(&s);
        assert_eq!(p.first.phase, StepPhase::Optimizer);
        assert_eq!(p.first.bytes, 1000 + 1000 + 3000 + 8);
        assert_eq!(p.steady.bytes, 5008);
        assert_eq!(p.step, StepKind::First);
    }
}

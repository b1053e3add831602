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

use crate::error::UnknownName;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How the loss turns hidden states into a cross-entropy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// transformers' loss: the full logits, their fp32 copy and log-softmax, and the fp32
    /// gradients of both at the start of the backward.
    #[default]
    Full,
    /// torchtune's `CEWithChunkedOutputLoss` (8 chunks): the logits are upcast and their
    /// gradients computed one chunk at a time; every chunk's log-softmax is still saved.
    Chunked,
    /// A fused linear cross-entropy (Liger's kernel): the logits never exist whole; the
    /// gradients of the hidden states and of a trained head are computed in the forward, chunk
    /// by chunk of about `hidden` logits per token row, and kept for the backward
    /// ([`FusedLossBytes`]).
    Fused,
}

impl LossKind {
    pub const ALL: [LossKind; 3] = [LossKind::Full, LossKind::Chunked, LossKind::Fused];
    /// torchtune's default `num_output_chunks`.
    pub const CHUNKS: u64 = 8;

    pub const fn name(self) -> &'static str {
        match self {
            LossKind::Full => "full",
            LossKind::Chunked => "chunked",
            LossKind::Fused => "fused",
        }
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownName {
                what: "loss",
                value: s.to_string(),
                expected: "full, chunked, fused".into(),
            })
    }
}

/// Settings of the step that change the timeline but not the buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepSettings {
    /// Micro-batches per optimizer step (`gradient_accumulation_steps`), at least 1.
    pub grad_accum: u64,
    pub loss: LossKind,
    /// The optimizer step fused into the backward (torchtune's `optimizer_in_bwd`, PyTorch's
    /// `register_post_accumulate_grad_hook`): each gradient is applied and freed as soon as it is
    /// accumulated, so at most one parameter's gradient (and its optimizer temporary) exists.
    /// Not compatible with gradient accumulation.
    pub optimizer_in_backward: bool,
    /// Saved activations offloaded to host memory (torchtune's `enable_activation_offloading`,
    /// `OffloadActivations` with its CUDA defaults, streams on):
    /// the GPU keeps the output head's and the loss's saved tensors and the forward stash; the
    /// host holds a copy of every other saved tensor ([`OffloadBytes`]).
    pub activation_offload: bool,
}

impl Default for StepSettings {
    fn default() -> Self {
        StepSettings {
            grad_accum: 1,
            loss: LossKind::Full,
            optimizer_in_backward: false,
            activation_offload: false,
        }
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
    /// Host memory holding offloaded activations (`--activation-offload`; 0 otherwise).
    pub host_offload_bytes: u64,
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
    /// Saved bytes at the largest moment of the backward's recomputation of a checkpointed block
    /// (0: none): the block's saved tensors and the checkpoints up to it, inside its MLP's or
    /// eager attention's backward (`recompute_moment` in the memory model).
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
    /// Gradients that exist at that moment: the lm_head's and every later block's, and those
    /// the block's own backward has made so far.
    pub head_gradients: u64,
    /// Gradients in flight at that moment: inside an MLP backward the residual's and the MLP's
    /// own, inside eager attention's the softmax's.
    pub recompute_temporaries: u64,
    /// The input ids (`8 T`).
    pub inputs: u64,
    /// Alive from the end of the forward through the loss, not saved for the backward: the
    /// final hidden states the output head reads (unless it saves them as they are) and the KV
    /// cache of a forward without checkpointing, where not shared with saved tensors; only with
    /// transformers' loss, inside the forward (`activations::output_held`).
    pub output_held: u64,
    pub grad_accum: u64,
    pub loss: LossKind,
    /// What the fused loss holds (zero for the other losses).
    pub fused_loss: FusedLossBytes,
    /// With the chunked loss, the gradients in flight at its largest moment in the output head's
    /// backward, once every chunk's log-softmax is freed ([`chunked_head_backward`]; 0 with the
    /// other losses).
    pub chunked_head_backward: u64,
    /// With the optimizer in the backward: the largest trainable tensor's gradient and its
    /// optimizer temporary (0 otherwise).
    pub optimizer_in_backward: Option<(u64, u64)>,
    /// With activation offloading: what stays on the GPU and what the host holds.
    pub offload: Option<OffloadBytes>,
}

/// What Liger's fused linear cross-entropy (`LigerFusedLinearCrossEntropyFunction`, reduction
/// `mean`) holds, per micro-batch. Its forward cuts the `T` token rows into chunks of
/// `next_power_of_2(ceil(T / ceil(V / h)))`, computes each chunk's logits in the compute dtype,
/// turns them into their gradient in place (the softmax runs in fp32 registers) and projects them
/// at once into the gradient of the hidden states and, when the head is trained, of its weight;
/// the backward returns those two as they are (`grad_output` is 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FusedLossBytes {
    /// Made in the forward and kept for the backward: the hidden states' gradient (`T h` in
    /// their dtype) ...
    pub hidden_gradient: u64,
    /// ... and, when the head is trained, its weight's (`V h` in the weight's dtype).
    pub head_gradient: u64,
    /// Alive while the loss runs: the model's output hidden states, one chunk's logits, the
    /// larger product of that chunk's two projections (the weight's gradient as `torch.mm`
    /// returns it, `V h`, except under autocast with an fp32 head, which CUDA accumulates in
    /// place with `addmm(out_dtype=float32)`; or, for a trained head under autocast, the fresh
    /// copy of `weight.t()` beside the cached copy of `weight`), the per-token losses (`4 T`)
    /// and the shifted labels (`8 T`).
    pub transient: u64,
    /// What the plain head saves and the fused loss does not: the lm_head's input (a trained
    /// head) and autocast's copy of its weight. The copy still exists while the loss runs
    /// (autocast's cache for a trained head, one per projection for a frozen one).
    pub head_input: u64,
    pub head_cast: u64,
    /// Without checkpointing, where the backward goes on to peak once no loss gradient is in
    /// flight: inside the last block's MLP backward, the final norm's and the down projection's
    /// saved input freed (`freed`) and the MLP's and the residual's gradients in flight
    /// (`in_flight`: `3 c T i + r T h`, a dense MLP). Zero with checkpointing (the recompute
    /// moment models it).
    pub last_block_freed: u64,
    pub last_block_in_flight: u64,
    /// Without checkpointing, where the forward peaks once the logits no longer do: inside the
    /// last block's down projection, before the final norm (`final_norm`, its saved bytes) runs,
    /// with `forward_in_flight` beside the tensors saved so far.
    pub final_norm: u64,
    pub forward_in_flight: u64,
    /// The head's gradient made in the forward is itself the head's `.grad` (an untied head;
    /// a tied one's is summed with the embedding's into a new tensor).
    pub head_gradient_becomes_grad: bool,
}

/// What torchtune's `OffloadActivations` (CUDA defaults: `use_streams=True`,
/// `max_fwd_stash_size=5`, `min_offload_size=1024`) leaves on the GPU and copies to the host.
/// Every tensor saved for backward inside the model's forward, of at least 1024 bytes and not a
/// parameter, is copied to pinned host memory on its own (a tensor saved by several operations
/// once per save); the output head runs under a `NoOpManager` and the loss outside the context,
/// so their saved tensors stay on the GPU. With streams, the GPU copies of the last five
/// offloaded tensors (the final norm's, the forward's last saves) are kept in the forward stash
/// until the backward's first node has run; in the backward a tensor is brought back when its
/// node unpacks it and freed after the next such node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadBytes {
    /// Saved bytes outside the loss that stay on the GPU when the backward starts: the head's
    /// input and weight copy, and the forward stash (the final norm's saved tensors).
    pub kept_on_gpu: u64,
    /// The host copies alive at the end of the forward (each saved tensor on its own).
    pub host: u64,
    /// Checkpoints on the host while a checkpointed block is recomputed (all but that block's).
    pub at_recompute_on_host: u64,
}

/// The gradients in flight at the chunked loss's largest moment in the output head's backward,
/// for `tokens` rows: torchtune's model returns every chunk's logits before its loss runs, so
/// autograd (latest node first) runs all `n` chunks' cross-entropy backwards first, leaving the
/// logits' gradients (`logits`: `T V` in their dtype) in flight, then one head projection's
/// backward per chunk, each freeing its chunk's logit gradient and making the gradient of the
/// chunk's hidden states (`hidden_chunk`, in the residual's dtype) and, when the head is
/// trained, of the head's weight (`weight`: `V h` in the matmul's dtype). Autograd sums the
/// chunks' weight gradients in its input buffer: the first sum is out of place (both are
/// transposed views, `mm`'s weight gradient), so three weight gradients are alive at once; later
/// sums are in place. The largest of: the first projection's (`logits + weight`), the second's
/// before the sum, and the sum itself (`logits (n - 2)/n + 3 weight + 2 hidden_chunk`),
/// measured with `torch.profiler`'s allocator events and `MemTracker`.
pub const fn chunked_head_backward(logits: u64, weight: u64, hidden_chunk: u64) -> u64 {
    if weight == 0 {
        return logits;
    }
    let chunk = logits.div_ceil(LossKind::CHUNKS);
    let first = logits + weight;
    let second = logits.saturating_sub(chunk) + 2 * weight + hidden_chunk;
    let summed = logits.saturating_sub(2 * chunk) + 3 * weight + 2 * hidden_chunk;
    let larger = if first > second { first } else { second };
    if larger > summed { larger } else { summed }
}

/// Host memory the activation offloading needs: the host copies of the saved tensors.
pub fn offloaded_bytes(s: &StepInputs) -> u64 {
    s.offload.map_or(0, |o| o.host)
}

/// The saved bytes (weight casts included) outside the loss.
fn offloadable(s: &StepInputs) -> u64 {
    saved_outside_loss(
        s.activations_at_backward_start,
        s.weight_casts_at_backward_start,
        s.loss_saved,
    )
}

/// The saved bytes and weight casts alive when the backward starts, less the loss's own.
pub(super) const fn saved_outside_loss(saved: u64, casts: u64, loss_saved: u64) -> u64 {
    (saved + casts).saturating_sub(loss_saved)
}

/// Moments of a step, in order. A checkpointed step adds the recomputation of the last block;
/// without checkpointing that moment repeats the backward's start.
pub const MOMENTS: usize = 7;

/// The moments of one step of `kind`, each documented with what it models:
///
/// - **forward end**: parameters, the optimizer state (steady step), gradients of earlier
///   micro-batches (accumulation), everything saved for backward but the loss's own tensors,
///   the weight casts, the logits in the compute dtype (`c T V`) and what the model's output
///   holds (the final hidden states, the KV cache) (with the fused loss and no checkpointing,
///   inside the last block's down projection when that holds more: [`FusedLossBytes`]);
/// - **loss**: adds the loss's saved log-softmax and labels, and the fp32 copy of the logits
///   that transformers' loss makes when the logits are 16-bit (`4 T V`);
/// - **backward start** (the peak of most fine-tuning steps): the model output is dropped, so
///   the logits are gone, every saved tensor is alive, and `nll_loss`'s gradient and the
///   log-softmax's gradient (`4 T V` each, fp32) are in flight: `+8 T V` temporaries (the fused
///   loss instead holds its kept gradients, and without checkpointing this moment is inside the
///   last block's MLP backward when that holds more: [`FusedLossBytes`]; with offloading only
///   what [`OffloadBytes`] keeps on the GPU of the saved bytes outside the loss);
/// - **recompute** (checkpointing): inside a recomputed block's MLP backward, the checkpoints
///   still alive and the block's recomputed tensors, the gradients of the blocks after it (the
///   last block: the head's; the first block: all but its own and the embedding's, whichever
///   moment is larger), and the MLP's and the residual's gradients in flight;
/// - **backward end**: every saved tensor freed, every gradient of the step present (LoRA's
///   frozen weights have none: the gradients bucket counts trainable tensors only);
/// - **optimizer**: gradients, the full state (created now on the first step) and the optimizer's
///   temporaries;
/// - **zero_grad**: gradients set to `None`; parameters and state remain.
pub fn timeline(s: &StepInputs, kind: StepKind) -> [Moment; MOMENTS] {
    let live = live_bytes(s, kind);
    std::array::from_fn(|i| Moment {
        phase: MOMENT_NAMES[i].0,
        label: MOMENT_NAMES[i].1,
        live: live[i],
    })
}

/// The phase and label of each moment of [`timeline`], in order.
const MOMENT_NAMES: [(StepPhase, &str); MOMENTS] = [
    (StepPhase::Forward, "forward end"),
    (StepPhase::Loss, "loss"),
    (StepPhase::Backward, "backward start"),
    (StepPhase::Backward, "recompute last block"),
    (StepPhase::Backward, "backward end"),
    (StepPhase::Optimizer, "optimizer step"),
    (StepPhase::ZeroGrad, "zero_grad"),
];

/// The live bytes of each moment of [`timeline`].
#[inline]
fn live_bytes(s: &StepInputs, kind: StepKind) -> [LiveBytes; MOMENTS] {
    let p = Prelude::of(s, kind);
    std::array::from_fn(|i| moment(s, &p, i))
}

/// What the moments of a step share.
struct Prelude {
    /// Parameters, gradients of earlier micro-batches, the state before the step, input ids.
    base: LiveBytes,
    state_before: u64,
    logits_stored: u64,
    /// The loss's saved bytes, what it holds with the logits, and its gradients in flight when
    /// the backward starts.
    loss_saved: u64,
    loss_transient: u64,
    loss_backward: u64,
    /// The saved bytes outside the loss kept on the GPU, and with the loss's.
    on_gpu: u64,
    saved: u64,
    /// Gradients after the backward, and the optimizer's temporaries.
    grads_after: u64,
    optimizer_temporaries: u64,
    /// What the model's output keeps alive through the loss ([`StepInputs::output_held`]).
    output_held: u64,
}

impl Prelude {
    #[inline(always)]
    fn of(s: &StepInputs, kind: StepKind) -> Self {
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
        // What the loss keeps and briefly holds, by kind: (saved for backward, held with the
        // logits in the loss, gradients in flight when the backward starts).
        let (loss_saved, loss_transient, loss_backward) = match s.loss {
            LossKind::Full => (s.loss_saved, logits_stored + logits_fp32_copy, 8 * s.logits),
            LossKind::Chunked => (
                s.loss_saved,
                logits_stored + logits_fp32_copy.div_ceil(LossKind::CHUNKS),
                (8 * s.logits).div_ceil(LossKind::CHUNKS),
            ),
            // The kept gradients replace the log-softmax; the head's saved input and weight
            // copy are gone by the backward (the copy lives through the loss).
            LossKind::Fused => (
                s.fused_loss.hidden_gradient + s.fused_loss.head_gradient,
                s.fused_loss.transient + s.fused_loss.head_cast,
                0,
            ),
        };
        let kept_outside_loss = offloadable(s);
        let on_gpu = match s.offload {
            Some(o) => kept_outside_loss.min(o.kept_on_gpu),
            None => kept_outside_loss,
        };
        let on_gpu = match s.loss {
            LossKind::Fused => {
                on_gpu.saturating_sub(s.fused_loss.head_input + s.fused_loss.head_cast)
            }
            LossKind::Full | LossKind::Chunked => on_gpu,
        };
        // With the optimizer in the backward, one gradient and one optimizer temporary at a
        // time.
        let (grads_after, optimizer_temporaries) = match s.optimizer_in_backward {
            Some((largest_gradient, largest_temporary)) => (largest_gradient, largest_temporary),
            None => (s.gradients, s.optimizer_temporaries),
        };
        Prelude {
            output_held: s.output_held,
            base,
            state_before,
            logits_stored,
            loss_saved,
            loss_transient,
            loss_backward,
            on_gpu,
            saved: on_gpu + loss_saved,
            grads_after,
            optimizer_temporaries,
        }
    }
}

/// Moment `i` of [`timeline`] (see there for what each holds).
#[inline(always)]
fn moment(s: &StepInputs, p: &Prelude, i: usize) -> LiveBytes {
    let f = &s.fused_loss;
    let (base, on_gpu, saved) = (p.base, p.on_gpu, p.saved);
    match i {
        // Forward end.
        0 => {
            let mut activations =
                on_gpu + p.logits_stored * u64::from(s.loss != LossKind::Fused) + p.output_held;
            if s.loss == LossKind::Fused && f.forward_in_flight > f.final_norm.min(on_gpu) {
                activations = on_gpu - f.final_norm.min(on_gpu) + f.forward_in_flight;
            }
            LiveBytes {
                activations,
                ..base
            }
        }
        // The loss: MemTracker books what the forward creates (the logits and their copies) as
        // activations.
        1 => LiveBytes {
            activations: saved + p.loss_transient + p.output_held,
            ..base
        },
        // Backward start.
        2 => backward_start(s, p),
        // A checkpointed block's recomputation (the backward's start again without it).
        3 => {
            if s.activations_at_recompute > 0 {
                LiveBytes {
                    activations: s
                        .activations_at_recompute
                        .saturating_sub(s.offload.map_or(0, |o| o.at_recompute_on_host))
                        + s.weight_casts_at_recompute,
                    gradients: base.gradients.max(s.head_gradients),
                    temporaries: s.recompute_temporaries,
                    ..base
                }
            } else {
                backward_start(s, p)
            }
        }
        // Backward end and the optimizer step.
        4 | 5 => {
            let mut live = LiveBytes {
                gradients: p.grads_after,
                optimizer: if i == 5 || s.optimizer_in_backward.is_some() {
                    s.optimizer_state + p.optimizer_temporaries
                } else {
                    p.state_before
                },
                ..base
            };
            // The fused loss makes a trained head's gradient in the forward; once it is the
            // head's `.grad`, MemTracker still books that tensor where it was made, as an
            // activation.
            if s.loss == LossKind::Fused
                && f.head_gradient_becomes_grad
                && s.optimizer_in_backward.is_none()
            {
                let made_in_forward = f.head_gradient.min(p.grads_after);
                live.gradients -= made_in_forward;
                live.activations += made_in_forward;
            }
            live
        }
        // After `zero_grad`.
        _ => LiveBytes {
            optimizer: s.optimizer_state,
            ..base
        },
    }
}

/// The total of each moment of [`timeline`] (what [`moment`]'s categories add up to, summed
/// without building them: the peak only needs the chosen moment's categories).
#[inline(always)]
fn moment_totals(s: &StepInputs, p: &Prelude) -> [u64; MOMENTS] {
    let base = p.base.total();
    let grads_before = p.base.gradients;
    let start = backward_start(s, p);
    let start_total = base + start.activations + start.temporaries;
    let recompute = if s.activations_at_recompute > 0 {
        base - grads_before
            + grads_before.max(s.head_gradients)
            + s.activations_at_recompute
                .saturating_sub(s.offload.map_or(0, |o| o.at_recompute_on_host))
            + s.weight_casts_at_recompute
            + s.recompute_temporaries
    } else {
        start_total
    };
    // Backward end and the optimizer step replace the earlier gradients and the state (the
    // fused loss's head gradient moves between categories, not in the total).
    let after = base - grads_before - p.state_before + p.grads_after;
    let full_state = s.optimizer_state + p.optimizer_temporaries;
    let backward_end = if s.optimizer_in_backward.is_some() {
        full_state
    } else {
        p.state_before
    };
    [
        moment(s, p, 0).total(),
        base + p.saved + p.loss_transient + p.output_held,
        start_total,
        recompute,
        after + backward_end,
        after + full_state,
        base - p.state_before + s.optimizer_state,
    ]
}

/// The backward's start, or where a loss that holds no gradient then peaks instead.
#[inline(always)]
fn backward_start(s: &StepInputs, p: &Prelude) -> LiveBytes {
    let f = &s.fused_loss;
    let saved = p.saved;
    let mut live = LiveBytes {
        activations: saved,
        temporaries: p.loss_backward,
        ..p.base
    };
    // The fused loss's backward starts with no gradient in flight: it peaks later, inside the
    // last block's MLP backward, when that holds more.
    if s.loss == LossKind::Fused
        && f.last_block_in_flight > f.hidden_gradient + f.last_block_freed.min(saved)
    {
        live.activations = (saved - f.hidden_gradient).saturating_sub(f.last_block_freed);
        live.temporaries = f.last_block_in_flight;
    }
    // The chunked loss's backward runs every chunk's cross-entropy backward first (each frees
    // its log-softmax), then the head's: it peaks there when that holds more (the field is 0
    // with the other losses).
    if s.chunked_head_backward > p.loss_saved + p.loss_backward {
        live.activations = p.on_gpu;
        live.temporaries = s.chunked_head_backward;
    }
    live
}

/// The largest moment of a step (the earliest one on a tie).
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

/// The moments before which the first step has no optimizer state: up to the optimizer step,
/// or up to the end of the backward when the optimizer runs inside it.
const fn moments_without_state(s: &StepInputs) -> usize {
    if s.optimizer_in_backward.is_some() {
        4
    } else {
        5
    }
}

/// The peak over the first and a steady-state step.
///
/// One timeline is evaluated: a steady step is the first step with the optimizer state alive
/// from its start, so its moments are the first step's plus the state wherever the first step
/// has not created it yet (the optimizer step and `zero_grad` are the same in both). The test
/// `peak_equals_the_largest_moment_of_both_timelines` holds this to [`step_peak`] on both.
#[inline]
pub fn peak(s: &StepInputs) -> PeakEstimate {
    let stateless = moments_without_state(s);
    let prelude = Prelude::of(s, StepKind::First);
    let t = moment_totals(s, &prelude);
    // The largest moment before the state exists and from then on (earliest on a tie); a
    // steady step adds the state to the former.
    let earliest_max = |a: (usize, u64), i: usize| if t[i] > a.1 { (i, t[i]) } else { a };
    let mut before = (0, t[0]);
    before = earliest_max(before, 1);
    before = earliest_max(before, 2);
    before = earliest_max(before, 3);
    let mut after = (5, t[5]);
    if stateless == 5 {
        before = earliest_max(before, 4);
    } else {
        after = (4, t[4]);
        after = earliest_max(after, 5);
    }
    after = earliest_max(after, 6);
    let (first_at, first_bytes) = if after.1 > before.1 { after } else { before };
    let before_steady = before.1 + s.optimizer_state;
    let (steady_at, steady_bytes) = if after.1 > before_steady {
        after
    } else {
        (before.0, before_steady)
    };
    // The categories of the larger step's peak moment only (the state is alive at a steady
    // step's moments before the first step creates it).
    let (step, at, bytes) = if steady_bytes > first_bytes {
        (StepKind::Steady, steady_at, steady_bytes)
    } else {
        (StepKind::First, first_at, first_bytes)
    };
    let mut by_category = moment(s, &prelude, at);
    if step == StepKind::Steady && at < stateless {
        by_category.optimizer += s.optimizer_state;
    }
    PeakEstimate {
        bytes,
        phase: MOMENT_NAMES[at].0,
        step,
        first_step_bytes: first_bytes,
        steady_step_bytes: steady_bytes,
        by_category,
        host_offload_bytes: offloaded_bytes(s),
    }
}

/// The peak of each step, first and steady, with its categories ([`step_peak`] of both kinds).
pub fn step_peaks(s: &StepInputs) -> [StepPeak; 2] {
    [
        step_peak(s, StepKind::First),
        step_peak(s, StepKind::Steady),
    ]
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
            output_held: 0,
            grad_accum: 1,
            loss: LossKind::Full,
            fused_loss: FusedLossBytes::default(),
            chunked_head_backward: 0,
            optimizer_in_backward: None,
            offload: None,
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

    /// What the model's output holds (80: the final hidden states and KV cache) is alive at the
    /// forward's end and through the loss, gone when the backward starts.
    #[test]
    fn the_output_holds_the_cache_and_final_states_through_the_loss() {
        let s = StepInputs {
            output_held: 80,
            ..inputs()
        };
        let m = timeline(&s, StepKind::First);
        assert_eq!(m[0].live.activations, 500 - 48 + 20 + 80);
        assert_eq!(m[1].live.activations, 500 + 20 + 40 + 80);
        assert_eq!(m[2].live.activations, 500);
    }

    /// The single-timeline shortcut of [`peak`] equals the largest moment of each step's own
    /// timeline, over every loss, accumulation, optimizer-in-backward, offload and recompute case.
    #[test]
    fn peak_equals_the_largest_moment_of_both_timelines() {
        let mut cases = 0;
        for loss in LossKind::ALL {
            for grad_accum in [1, 3] {
                for oib in [None, Some((70, 90))] {
                    for offload in [
                        None,
                        Some(OffloadBytes {
                            kept_on_gpu: 100,
                            host: 400,
                            at_recompute_on_host: 150,
                        }),
                    ] {
                        for (recompute, state, temps) in
                            [(0, 200, 100), (300, 200, 100), (0, 3000, 1500), (900, 0, 0)]
                        {
                            let s = StepInputs {
                                loss,
                                grad_accum,
                                optimizer_in_backward: oib,
                                offload,
                                fused_loss: FusedLossBytes {
                                    hidden_gradient: 10,
                                    head_gradient: 20,
                                    transient: 40,
                                    head_input: 20,
                                    head_cast: 6,
                                    last_block_freed: 60,
                                    last_block_in_flight: if recompute == 0 { 90 } else { 0 },
                                    final_norm: 15,
                                    forward_in_flight: if recompute == 0 { 70 } else { 0 },
                                    head_gradient_becomes_grad: true,
                                },
                                activations_at_recompute: recompute,
                                weight_casts_at_recompute: recompute / 10,
                                head_gradients: 30,
                                recompute_temporaries: 40,
                                optimizer_state: state,
                                optimizer_temporaries: temps,
                                output_held: state / 100 + temps / 10,
                                ..inputs()
                            };
                            let p = peak(&s);
                            let totals = moment_totals(&s, &Prelude::of(&s, StepKind::First));
                            let moments = timeline(&s, StepKind::First).map(|m| m.live.total());
                            assert_eq!(totals, moments, "{s:?}");
                            let [first, steady] = step_peaks(&s);
                            assert_eq!(p.first_step_bytes, first.bytes, "{s:?}");
                            assert_eq!(p.steady_step_bytes, steady.bytes, "{s:?}");
                            let at = if steady.bytes > first.bytes {
                                steady
                            } else {
                                first
                            };
                            assert_eq!((p.phase, p.by_category), (at.phase, at.by_category));
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 3 * 2 * 2 * 2 * 4);
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
        let [first, steady] = step_peaks(&s);
        assert_eq!(first.phase, StepPhase::Optimizer);
        assert_eq!(first.bytes, 1000 + 1000 + 3000 + 8);
        assert_eq!(steady.bytes, 5008);
        assert_eq!(p.step, StepKind::First);
    }

    /// torchtune's chunked loss: the fp32 copy and the backward's gradients one chunk of 8 at a
    /// time; the loss itself (bf16 logits 20 + one chunk's copy 5 + saved 500) now peaks:
    /// 1000 + 200 + 525 + 8 = 1733, below the full loss's 1788.
    #[test]
    fn chunked_loss_divides_the_loss_transients() {
        let mut s = inputs();
        s.loss = LossKind::Chunked;
        let [_, steady] = step_peaks(&s);
        assert_eq!((steady.bytes, steady.phase), (1733, StepPhase::Loss));
        assert_eq!(timeline(&s, StepKind::Steady)[2].live.temporaries, 10);
    }

    /// The chunked loss's head backward, against `torch.profiler`'s allocator events for 8
    /// chunks of `F.linear` over an fp32 [2, 64, 64] input and a trained 2048 x 64 head, each
    /// chunk's `cross_entropy(logits.float())` summed (no MemTracker): 2,367,492 bytes live at
    /// the backward's peak, 4 of them the loss's gradient. The logits' gradients are `4 T V` =
    /// 1,048,576 bytes, a weight gradient 524,288, a chunk's hidden-state gradient 4,096.
    #[test]
    fn chunked_head_backward_matches_the_allocator() {
        assert_eq!(chunked_head_backward(1_048_576, 524_288, 4_096), 2_367_488);
        // A frozen head: the logits' gradients alone.
        assert_eq!(chunked_head_backward(1_048_576, 0, 4_096), 1_048_576);
        // In a step it replaces the backward's start once it holds more than the loss's saved
        // bytes and one chunk's gradients (48 + 10): the log-softmax freed, 452 saved bytes
        // remain beside it.
        let mut s = inputs();
        s.loss = LossKind::Chunked;
        s.chunked_head_backward = 600;
        let start = timeline(&s, StepKind::Steady)[2].live;
        assert_eq!((start.activations, start.temporaries), (452, 600));
    }

    /// A fused linear cross-entropy: no logits and no log-softmax (the 48 saved bytes out), nor
    /// the head's input (20) and weight copy (6) at the backward; the kept gradients in (30) and,
    /// while the loss runs, its transients (40) and the copy: the loss moment,
    /// 1000 + 200 + (452 - 26) + 30 + 40 + 6 + 8 = 1710; the backward start 1000 + 200 + 426 +
    /// 30 + 8 = 1664.
    #[test]
    fn fused_loss_never_holds_the_logits() {
        let mut s = inputs();
        s.loss = LossKind::Fused;
        s.fused_loss = FusedLossBytes {
            hidden_gradient: 10,
            head_gradient: 20,
            transient: 40,
            head_input: 20,
            head_cast: 6,
            ..FusedLossBytes::default()
        };
        let [_, steady] = step_peaks(&s);
        assert_eq!((steady.bytes, steady.phase), (1710, StepPhase::Loss));
        assert_eq!(timeline(&s, StepKind::Steady)[2].live.total(), 1664);
        // Without checkpointing the backward goes on into the last block's MLP: the hidden
        // states' gradient (10) and the freed tensors (60) out, its gradients in flight (90) in:
        // 1000 + 200 + (456 - 10 - 60) + 90 + 8 = 1684.
        s.fused_loss.last_block_freed = 60;
        s.fused_loss.last_block_in_flight = 90;
        let start = timeline(&s, StepKind::Steady)[2].live;
        assert_eq!((start.total(), start.temporaries), (1684, 90));
        // And the forward inside the last block: the final norm (15) not yet run, 70 in flight:
        // 1000 + 200 + (426 - 15 + 70) + 8 = 1689.
        s.fused_loss.final_norm = 15;
        s.fused_loss.forward_in_flight = 70;
        assert_eq!(timeline(&s, StepKind::Steady)[0].live.total(), 1689);
    }

    /// The optimizer in the backward holds one gradient and one temporary at a time: full
    /// fine-tuning's first step no longer peaks in the optimizer (5008) but when the steady
    /// step's backward starts (1000 + 2000 + 500 + 80 + 8).
    #[test]
    fn optimizer_in_backward_frees_each_gradient() {
        let mut s = inputs();
        s.gradients = 1000;
        s.optimizer_state = 2000;
        s.optimizer_temporaries = 1000;
        s.optimizer_in_backward = Some((100, 100));
        let p = peak(&s);
        let [first, _] = step_peaks(&s);
        assert_eq!(first.bytes, 1000 + 100 + 2000 + 100 + 8);
        assert_eq!(
            (p.bytes, p.phase, p.step),
            (3588, StepPhase::Backward, StepKind::Steady)
        );
    }

    /// Offloading keeps what the offload says of the 452 saved bytes outside the loss (113) and
    /// the loss's 48 on the GPU; the host figure is the offload's.
    #[test]
    fn offload_keeps_the_stash_on_the_gpu() {
        let mut s = inputs();
        s.offload = Some(OffloadBytes {
            kept_on_gpu: 113,
            host: 500,
            at_recompute_on_host: 0,
        });
        assert_eq!(step_peaks(&s)[1].bytes, 1000 + 200 + 113 + 48 + 80 + 8);
        assert_eq!(offloaded_bytes(&s), 500);
    }
}

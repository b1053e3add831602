//! Activation memory: what the forward pass saves for backward.
//!
//! Three models: the seed lab's rough rule, none, and a per-operation model of the Hugging Face
//! implementations (first cut from Korthikanti et al. 2022, `sbh(34 + 5as/h)` per layer with
//! 16-bit activations; to be corrected from measurements).

use super::MemorySettings;
use super::exact::Exact;
use crate::dtype::DType;
use crate::error::{CountError, UnknownName};
use crate::plan::{ActivationDtype, DENSE_MATMUL_DTYPES, TrainingPlan};
use crate::shape::{
    ActivationRecipe, AttentionLayout, MlpActivation, MlpLayout, ModelShape, ModuleGroup, NormKind,
    NormPlacement, PositionKind, QkNorm,
};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationModel {
    /// The seed lab: `batch x seq x d_model x n_layer x bytes_per_element` (16 B in the lab).
    Seed { bytes_per_element: u64 },
    /// The per-operation model of the implementation.
    Model,
    /// No activations (what accelerate's estimator reports).
    None,
}

impl ActivationModel {
    pub const fn name(self) -> &'static str {
        match self {
            ActivationModel::Seed { .. } => "seed",
            ActivationModel::Model => "model",
            ActivationModel::None => "none",
        }
    }
}

impl FromStr for ActivationModel {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(ActivationModel::Seed {
                bytes_per_element: 16,
            }),
            "model" => Ok(ActivationModel::Model),
            "none" => Ok(ActivationModel::None),
            other => Err(UnknownName {
                what: "activation model",
                value: other.to_string(),
                expected: "seed, model, none".into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionImpl {
    /// Materialized scores and probabilities (`a s^2 b` terms).
    Eager,
    /// `scaled_dot_product_attention`.
    Sdpa,
    /// FlashAttention: no `s^2` terms.
    Flash,
}

impl AttentionImpl {
    pub const fn name(self) -> &'static str {
        match self {
            AttentionImpl::Eager => "eager",
            AttentionImpl::Sdpa => "sdpa",
            AttentionImpl::Flash => "flash",
        }
    }
}

impl AttentionImpl {
    /// The implementation transformers runs on `model` when asked for `self`: a model whose
    /// attention has sinks (gpt-oss: `_supports_sdpa = False`) has no sdpa path, and
    /// transformers' default falls back to eager (OpenAI's fine-tuning recipe asks for eager).
    pub fn on(self, model: &ModelShape) -> AttentionImpl {
        if self == AttentionImpl::Sdpa && model.block.attention_sinks {
            AttentionImpl::Eager
        } else {
            self
        }
    }
}

impl fmt::Display for AttentionImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttentionImpl {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "eager" => Ok(AttentionImpl::Eager),
            "sdpa" => Ok(AttentionImpl::Sdpa),
            "flash" | "flash-attention-2" | "flash_attention_2" => Ok(AttentionImpl::Flash),
            other => Err(UnknownName {
                what: "attention implementation",
                value: other.to_string(),
                expected: "eager, sdpa, flash".into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checkpointing {
    None,
    /// Full activation recomputation (transformers' `gradient_checkpointing_enable()`,
    /// non-reentrant): each block keeps only its input (and, with eager attention, its mask);
    /// the step peaks while the backward recomputes the last block, or at the forward's end when
    /// the logits and loss outweigh one block. Measured in
    /// `fixtures/memory/measured_memory_ckpt_dropout.json`. Autocast's weight casts are still
    /// counted for every layer (see `weight_cast_bytes`), which over-predicts them.
    Full,
    /// Full recomputation with `torch.utils.checkpoint(use_reentrant=True)`, what peft's
    /// `prepare_model_for_kbit_training` enables (and `gradient_checkpointing_kwargs` with
    /// `use_reentrant: true` asks for): the same saved bytes, but the backward recomputes a
    /// block's forward whole and runs its backward from the block's recomputed output, which stays
    /// alive (a temporary, in the residual stream's dtype) until that block's backward is done
    /// (measured with `MemTracker` on qwen3_moe QLoRA).
    Reentrant,
}

impl Checkpointing {
    pub const fn name(self) -> &'static str {
        match self {
            Checkpointing::None => "none",
            Checkpointing::Full => "full",
            Checkpointing::Reentrant => "reentrant",
        }
    }

    /// Blocks are recomputed in the backward (either kind of checkpointing).
    pub const fn recomputes(self) -> bool {
        !matches!(self, Checkpointing::None)
    }
}

impl FromStr for Checkpointing {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Checkpointing::None,
            Checkpointing::Full,
            Checkpointing::Reentrant,
        ]
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| UnknownName {
            what: "checkpointing",
            value: s.to_string(),
            expected: "none, full, reentrant".into(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ActivationSettings {
    pub model: ActivationModel,
    pub attention: AttentionImpl,
    pub checkpointing: Checkpointing,
    /// Dropout probability, applied to every dropout the implementation has (the config's
    /// residual, embedding and attention dropouts, and peft's `lora_dropout`); above 0, the GPU
    /// kernels' 1-byte masks are saved, plus the copies dropout makes where a matmul saves its
    /// dropped input (eager attention's probabilities, LoRA's `lora_A` input without autocast).
    /// sdpa and flash draw attention dropout inside the kernel and save no mask. Llama-style
    /// blocks have no residual dropout. `None`: no dropout.
    pub dropout: Option<f64>,
}

impl ActivationSettings {
    pub fn seed() -> Self {
        ActivationSettings {
            model: ActivationModel::Seed {
                bytes_per_element: 16,
            },
            attention: AttentionImpl::Eager,
            checkpointing: Checkpointing::None,
            dropout: None,
        }
    }

    fn dropout_masks(&self) -> bool {
        self.dropout.is_some_and(|p| p > 0.0)
    }
}

/// Activation bytes by component (all per GPU, for one micro-batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActivationBreakdown {
    pub attention: u64,
    pub mlp: u64,
    pub norms: u64,
    pub embeddings: u64,
    pub logits_loss: u64,
    /// Terms the regime adds (LoRA's `x A`, DoRA's weight-sized temporaries, ...).
    pub regime: u64,
    /// The seed's rough rule, when that model is chosen.
    pub rough: u64,
}

pub struct ActivationResult {
    pub total: u64,
    pub weight_casts: u64,
    pub breakdown: ActivationBreakdown,
    /// For the step timeline ([`super::peak`]): the saved bytes alive when the loss's backward
    /// starts (`total` without checkpointing; with it the checkpoints, the final norm and the
    /// loss), and the most alive while the backward recomputes a block, every checkpoint
    /// counted (0 without checkpointing: no recompute moment).
    pub at_backward_start: u64,
    pub at_recompute: u64,
    /// While a block is recomputed, the saved bytes but the blocks' checkpoints and the
    /// gradients in flight: inside a dense block's MLP backward, an expert block's, and (either
    /// kind) eager attention's softmax backward. Saved bytes 0: no block of that kind (or no
    /// checkpointing); attention in flight 0: not a moment of its own (sdpa).
    pub recompute: [[u64; 2]; 3],
    /// One block's checkpoint (its input, `r T h`; 0 without checkpointing).
    pub checkpoint: u64,
    /// What the model's output keeps alive through transformers' loss ([`output_held`]).
    pub output_held: u64,
}

fn to_u64(v: u128) -> Result<u64, CountError> {
    u64::try_from(v).map_err(|_| CountError {
        what: "activation bytes",
    })
}

/// Activation bytes (and autocast's weight copies) of one micro-batch.
pub fn estimate_activations(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<ActivationResult, CountError> {
    let act = settings.activations;
    let b = u128::from(settings.workload.batch);
    // A regime's virtual tokens (prompt tuning) lengthen every sequence.
    let s = u128::from(settings.workload.seq) + u128::from(plan.extra_tokens());
    let (h, layers) = (u128::from(model.dims.hidden), u128::from(model.dims.layers));
    let mut br = ActivationBreakdown::default();
    match act.model {
        ActivationModel::None => {
            return Ok(ActivationResult {
                total: 0,
                weight_casts: 0,
                breakdown: br,
                at_backward_start: 0,
                at_recompute: 0,
                recompute: [[0; 2]; 3],
                checkpoint: 0,
                output_held: 0,
            });
        }
        ActivationModel::Seed { bytes_per_element } => {
            let bytes = b * s * h * layers * u128::from(bytes_per_element);
            br.rough = to_u64(bytes)?;
            let rough = br.rough;
            return Ok(ActivationResult {
                total: rough,
                weight_casts: 0,
                breakdown: br,
                at_backward_start: rough,
                at_recompute: 0,
                recompute: [[0; 2]; 3],
                checkpoint: 0,
                output_held: 0,
            });
        }
        ActivationModel::Model => {}
    }

    let parts = model_activations(model, plan, settings);
    let total = parts.attention
        + parts.mlp
        + parts.norms
        + parts.embeddings
        + parts.logits_loss
        + parts.regime;
    let bytes = |v: Exact| {
        v.get().ok_or(CountError {
            what: "activation bytes",
        })
    };
    br.attention = bytes(parts.attention)?;
    br.mlp = bytes(parts.mlp)?;
    br.norms = bytes(parts.norms)?;
    br.embeddings = bytes(parts.embeddings)?;
    br.logits_loss = bytes(parts.logits_loss)?;
    br.regime = bytes(parts.regime)?;
    let weight_casts = weight_cast_bytes(plan, settings);
    let total = bytes(total)?;
    let (at_backward_start, at_recompute, checkpoint) = match parts.checkpointed {
        Some(c) => (
            bytes(c.at_backward_start)?,
            bytes(c.at_recompute)?,
            bytes(c.checkpoint)?,
        ),
        None => (total, 0, 0),
    };
    let mut recompute = [[0; 2]; 3];
    if let Some(c) = parts.checkpointed {
        for (slot, [saved, in_flight]) in recompute.iter_mut().zip(c.detail) {
            *slot = [bytes(saved)?, bytes(in_flight)?];
        }
    }
    Ok(ActivationResult {
        total,
        weight_casts: bytes(weight_casts)?,
        breakdown: br,
        at_backward_start,
        at_recompute,
        recompute,
        checkpoint,
        output_held: parts.output_held,
    })
}

/// The saved tensors as a saved-tensor hook sees them, one by one, beside the activation total
/// that counts each storage once, for activation offloading ([`saves_one_by_one`]).
pub(super) struct SavesOneByOne {
    /// The final norm's saved bytes, each storage once (as the activation total counts them).
    pub final_norm: u64,
    /// The same tensors counted once per save: an RMSNorm saves its fp32 input and `rsqrt` twice
    /// (for `pow` and for the product); GPT-2's LayerNorm saves each once.
    pub final_norm_each: u64,
    /// Without checkpointing, what the blocks save more than once (LLaMA-style blocks; GPT-2's
    /// are not modelled): each RMSNorm's input and `rsqrt` (none for the first norm when nothing
    /// upstream is trained, whose graph is not recorded); without autocast, a module input read
    /// by several Linears that save it (q, k, v; gate, up); the attention kernel's output, which
    /// the output projection reads as a view of it (sdpa); every `cos` and `sin` that rotary
    /// embeddings save (for q and for k, in every block); and the matmul weights used as stored
    /// (their transposed views), the output head's aside.
    pub block_repeats: u64,
}

/// The saves counted one by one ([`SavesOneByOne`]). Off the default path.
#[cold]
pub(super) fn saves_one_by_one(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<SavesOneByOne, CountError> {
    let x = Ctx::new(model, plan, settings);
    let unique = x.final_norm();
    let norm_repeat = if x.gpt2 {
        Exact::ZERO
    } else {
        4 * x.th + 4 * x.t
    };
    let mut repeats = Exact::ZERO;
    if !x.gpt2 {
        let norms = Exact::from(u64::from(model.block.norms)) * x.layers;
        let recorded_norms = if x.base_trainable {
            norms
        } else {
            norms.saturating_sub(Exact::new(1))
        };
        repeats += norm_repeat * recorded_norms;
        let saves = |readers: u64, adapted: u64| {
            let n = if x.inputs.all {
                readers
            } else {
                adapted.min(readers)
            };
            Exact::new(n.saturating_sub(1))
        };
        if !x.autocast {
            let attention_readers = match model.attention {
                AttentionLayout::Separate => 3,
                AttentionLayout::FusedQkv | AttentionLayout::Latent(_) => 1,
            };
            let mlp_readers = match model.mlp {
                MlpLayout::Gated => 2,
                _ => 1,
            };
            let (dense_layers, _) = x.layer_kinds;
            repeats += saves(attention_readers, x.inputs.adapted.attention) * x.cth * x.layers
                + saves(mlp_readers, x.inputs.adapted.mlp) * x.cth * dense_layers;
        }
        if !x.eager && x.o_proj_input_saved() && !o_proj_reads_a_copy(&x) {
            repeats += x.c * x.t * x.a * x.dh * x.layers;
        }
        if matches!(model.positions, PositionKind::Rotary) {
            let rotary = Exact::from(model.block.rotary_dim.unwrap_or(model.dims.head_dim));
            repeats += (4 * x.resid * x.layers * x.s * rotary).saturating_sub(8 * x.s * rotary);
        }
        let head = Exact::from(model.dims.vocab) * x.h;
        let head_dtype = settings.base_weights_dtype(x.totals);
        let mut views = Exact::from(
            saved_weight_elements(plan, settings, true)
                .get()
                .unwrap_or(u64::MAX),
        );
        if head_dtype == settings.precision.compute_dtype() {
            views = views.saturating_sub(head);
        }
        repeats += views * x.c;
    }
    let bytes = |v: Exact| {
        v.get().ok_or(CountError {
            what: "activation bytes",
        })
    };
    Ok(SavesOneByOne {
        final_norm: bytes(unique)?,
        final_norm_each: bytes(unique + norm_repeat)?,
        block_repeats: bytes(repeats)?,
    })
}

/// What the forward holds beside the tensors saved so far while the last block's down
/// projection runs, without checkpointing (LLaMA-style blocks; 0 for GPT-2's), measured with the
/// fused loss, whose loss no longer hides this moment: the embedding output, which the model's
/// forward keeps to its end (saved anyway when the embedding trains); under autocast the KV
/// cache's fp32 keys (rotary embeddings promote them; sdpa saves a 16-bit copy), one per block,
/// and the MLP's fp32 input (its Linears save 16-bit copies); the down projection's output and,
/// when an adapter sits on it with a frozen base under autocast, its 16-bit input (which only
/// the adapter's own copy replaces), peft's fp32 copy of that input, and the adapter's outputs.
#[cold]
pub(super) fn forward_in_flight(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<u64, CountError> {
    let x = Ctx::new(model, plan, settings);
    if x.gpt2 {
        return Ok(0);
    }
    let mut bytes = if x.base_trainable {
        Exact::ZERO
    } else {
        x.resid * x.th
    };
    if x.autocast {
        let cti = x.c * x.t * Exact::from(model.dims.intermediate);
        bytes += 4 * x.t * x.kv * x.dh * x.layers + 4 * x.th;
        bytes += if x.inputs.adapted.down && !x.inputs.all && x.c != Exact::new(4) {
            cti + 4 * x.t * Exact::from(model.dims.intermediate) + 3 * x.cth
        } else {
            x.cth
        };
    } else {
        bytes += x.cth;
    }
    bytes.get().ok_or(CountError {
        what: "activation bytes",
    })
}

/// Autocast's 16-bit weight copies that matmuls save: a weight's copy is saved when the matmul
/// needs it for the gradient of its input, that is, unless nothing upstream requires grad. With a
/// frozen embedding that is the case for the first block's q, k, v (base weights and LoRA A);
/// LoRA B's input always requires grad. Measured exactly on every record in `fixtures/memory`. A
/// weight already stored in the compute dtype (a bf16 base under bf16 autocast) is used as it is:
/// the saved tensor is the parameter itself, not a copy. Only the per-operation model counts them.
#[inline(always)]
fn weight_cast_bytes(plan: &TrainingPlan, settings: &MemorySettings) -> Exact {
    let precision = settings.precision;
    if !precision.autocast() || settings.activations.model != ActivationModel::Model {
        return Exact::ZERO;
    }
    saved_weight_elements(plan, settings, false) * precision.compute_dtype().bytes()
}

/// Elements of the matmul weights whose matmul saves them (for the gradient of its input, so not
/// the first block's q, k, v when nothing upstream requires grad): those stored in another dtype
/// than the compute dtype (`as_stored` false: autocast saves a copy) or those stored in it
/// (`as_stored` true: the saved tensor is the parameter's transposed view).
#[inline(always)]
fn saved_weight_elements(plan: &TrainingPlan, settings: &MemorySettings, as_stored: bool) -> Exact {
    let precision = settings.precision;
    let totals = plan.totals();
    let compute = precision.compute_dtype();
    // With a frozen embedding the first block's attention-input weights are not saved at all.
    let skip_first_block = !totals.base_trainable;
    let cast = |[all, first_block]: [u64; 2], stored: DType| {
        if (stored == compute) != as_stored {
            0
        } else if skip_first_block {
            all - first_block
        } else {
            all
        }
    };
    let mut elements = Exact::new(cast(totals.trainable_matmul, precision.trainable_dtype()))
        + cast(totals.frozen_matmul, settings.frozen_dtype());
    for (dense, dtype) in totals.dense_matmul.into_iter().zip(DENSE_MATMUL_DTYPES) {
        elements += Exact::new(cast(dense, dtype));
    }
    elements
}

/// Activation bytes per component, before conversion to `u64`.
#[derive(Default)]
struct Parts {
    attention: Exact,
    mlp: Exact,
    norms: Exact,
    embeddings: Exact,
    logits_loss: Exact,
    regime: Exact,
    /// With checkpointing: the saved bytes when the backward starts and while it recomputes a
    /// block.
    checkpointed: Option<RecomputePeak>,
    /// [`output_held`].
    output_held: u64,
}

/// The checkpointed step's backward, measured with `MemTracker` on qwen3_moe (dense and expert
/// layers) in `fixtures/memory/measured_peak.json`: it peaks inside the MLP backward of a
/// recomputed block, where the MLP's own gradients are in flight beside its saved tensors.
#[derive(Clone, Copy)]
struct RecomputePeak {
    /// Checkpoints, final norm and loss when the backward starts.
    at_backward_start: Exact,
    /// Every checkpoint and the largest of [`RecomputePeak::detail`]'s saved bytes: at most what
    /// any recompute moment keeps.
    at_recompute: Exact,
    /// [`ActivationResult::recompute`]: per block kind (dense, experts; saved 0 when the model
    /// has none) the saved bytes while a block of that kind is recomputed, without the blocks'
    /// checkpoints, less what its MLP backward has already consumed (a dense MLP's down
    /// projection input), and the gradients in flight: the residual's beside a dense MLP's
    /// `d(down input)` and its two branches' gradients (`3 c T i`), or an expert layer's per-slot
    /// gradients of the gathered input, the expert output and their product with the routing
    /// weights (`3 T k h` in the experts' weight dtype); then the same two inside a recomputed
    /// block's attention backward (in flight 0 but with eager attention).
    detail: [[Exact; 2]; 3],
    /// One block's checkpoint (`r T h`).
    checkpoint: Exact,
}

/// The per-operation model of the Hugging Face implementations (transformers 5, torch 2.15),
/// fitted op by op to `fixtures/memory/measured_memory.json`. `c` is the compute dtype's size,
/// `r` the residual stream's (fp32 under autocast), `T = b s` the tokens of the micro-batch.
///
/// Per block, llama family (RMSNorm, gated MLP, RoPE):
/// - each RMSNorm saves its input upcast to fp32 (`4 T h`), the fp32 `rsqrt` (`4 T`), and, when
///   its weight is trained, the normalized input (`r T h`);
/// - matmul inputs are saved only when the Linear's weight or an adapter needs them: `c T h` for
///   the attention input and the MLP input (under autocast one cast per consuming Linear: q, k,
///   v and gate, up each cast the fp32 norm output), `c T i` for `down_proj`;
/// - the gated MLP saves gate, act(gate) and up: `3 c T i`;
/// - sdpa saves q, k, v, the output and the fp32 logsumexp: `c T (2 a d + 2 k d) + 4 b a s`;
///   eager saves q and the repeated k, v (`3 c T a d`), the softmax probabilities
///   (`4 b a s^2`, plus their `c`-byte cast under autocast) and the merged output `c T h`;
/// - RoPE's cos and sin are saved once (`2 * 4 s d`).
///
/// GPT-2 (LayerNorm, Conv1D, gelu_new): LayerNorm saves its input and fp32 mean and rstd
/// (`r T h + 8 T`) whether trained or not; gelu_new saves `4 c T i`, `c_proj` its input `c T i`;
/// sdpa saves the fused qkv output, q/k/v/out views and the logsumexp (`6 c T h + 4 b a s`), eager
/// saves q, k, v, the probabilities and the merged output (`4 c T h` + probabilities).
///
/// Both: the loss saves the fp32 log-softmax (`4 T V`) and the int64 shifted labels (`8 T`); a
/// trained embedding saves the input ids (`8 T`, and GPT-2's position ids `8 s`); a frozen
/// embedding makes the first norm save nothing. Regime terms come from the plan (LoRA's `x A`:
/// `c T r` per adapted module; DoRA's identity input, base and LoRA outputs).
fn model_activations(model: &ModelShape, plan: &TrainingPlan, settings: &MemorySettings) -> Parts {
    let x = Ctx::new(model, plan, settings);
    let block = match model.block.recipe {
        ActivationRecipe::Gpt2 => gpt2_block(&x),
        ActivationRecipe::Decoder | ActivationRecipe::Generic => decoder_block(&x),
    };
    let Block {
        attn,
        mut mlp_dense,
        mut mlp_sparse,
        norms,
        first_norm,
    } = block;
    let mut attn_block = attn;
    // Measured: under autocast with sdpa, peft casts an adapted output projection's 16-bit input
    // up to the adapter's fp32 and autocast casts it back down, so lora_A saves a fresh copy
    // (`c T h`) instead of sharing the attention output's storage.
    if x.autocast && !x.eager && x.totals.adapts_attention_output {
        attn_block += x.cth;
    }
    let drop = dropout_terms(&x);
    attn_block += drop.attention;
    mlp_dense += drop.mlp;
    mlp_sparse += drop.mlp;
    let (dense_layers, sparse_layers) = x.layer_kinds;
    let mlp_layers = mlp_dense * dense_layers + mlp_sparse * sparse_layers;
    let mut parts = Parts {
        output_held: output_held(&x),
        ..Parts::default()
    };
    // Sliding-window layers under sdpa: each saves its own mask (see `sliding_window_mask`).
    let (mask, mask_layers) = sliding_window_mask(&x);
    if x.act.checkpointing == Checkpointing::None {
        parts.attention = attn_block * x.layers + mask * mask_layers;
        parts.mlp = mlp_layers;
        parts.norms = norms * x.layers;
        // The first norm's input is the embedding output: nothing upstream needs its gradient
        // when the embedding is frozen.
        if !x.base_trainable {
            parts.norms = parts.norms.saturating_sub(first_norm);
        }
    }
    // Final norm, lm_head input, loss.
    let final_norm = x.final_norm();
    parts.norms += final_norm;
    let lm_head_input = if x.base_trainable { x.cth } else { Exact::ZERO };
    parts.logits_loss = 4 * x.t * x.v + 8 * x.t + 4 + lm_head_input;
    if model.block.final_logit_softcap {
        // tanh(logits / cap) keeps its output for the backward.
        parts.logits_loss += x.c * x.t * x.v;
    }
    if x.base_trainable {
        parts.embeddings = 8 * x.t + if x.gpt2 { 8 * x.s } else { Exact::ZERO };
    }
    if !x.gpt2 && matches!(model.positions, PositionKind::Rotary) {
        let rotary = Exact::from(model.block.rotary_dim.unwrap_or(model.dims.head_dim));
        parts.attention += 2 * 4 * x.s * rotary;
    }
    let [per_token, fixed] = x.totals.compute_terms.map(Exact::new);
    let [per_token_bytes, fixed_bytes] = x.totals.dense_term_bytes.map(Exact::new);
    parts.regime = (per_token * x.t + fixed) * x.c + per_token_bytes * x.t + fixed_bytes;
    if x.autocast {
        let [per_token, fixed] = x.totals.autocast_terms.map(Exact::new);
        parts.regime += (per_token * x.t + fixed) * x.c;
    }
    parts.embeddings += drop.outside_blocks;
    parts.regime += drop.adapters;
    if x.act.checkpointing.recomputes() {
        let (dense_bwd, sparse_bwd) = mlp_backward(&x, mlp_dense, mlp_sparse);
        // Freed by the time eager attention's softmax backward runs: the MLP side's norm, the
        // merged output o_proj read, the repeated values and the probabilities' 16-bit cast
        // (the fp32 probabilities stay for the softmax's backward).
        let attention_freed = if x.eager {
            norms.saturating_sub(first_norm)
                + 2 * x.c * x.t * x.a * x.dh
                + x.probs.saturating_sub(4 * x.b * x.a * x.s * x.s)
        } else {
            Exact::ZERO
        };
        let block = CheckpointedBlock {
            // The recomputed block may be a sliding-window one.
            attn: attn_block + mask,
            attention_freed,
            mlp: mlp_dense.max(mlp_sparse),
            mlp_backward: [
                (dense_layers != Exact::ZERO).then_some(dense_bwd),
                (sparse_layers != Exact::ZERO).then_some(sparse_bwd),
            ],
            norms,
            adapter_dropout: drop.adapters,
            final_norm,
        };
        checkpointed(&x, plan, block, &mut parts);
    }
    parts
}

/// The quantities every term is built from, in bytes (`Exact`: u64 with an overflow flag).
struct Ctx<'a> {
    model: &'a ModelShape,
    plan: &'a TrainingPlan,
    totals: &'a crate::plan::PlanTotals,
    act: ActivationSettings,
    b: Exact,
    s: Exact,
    t: Exact,
    h: Exact,
    layers: Exact,
    v: Exact,
    a: Exact,
    kv: Exact,
    dh: Exact,
    /// The compute dtype's size and the residual stream's (fp32 under autocast).
    c: Exact,
    c_bytes: u64,
    resid: Exact,
    th: Exact,
    cth: Exact,
    autocast: bool,
    /// Under autocast, the residual stream (and so what the norms hand the Linears) is fp32: the
    /// embedding's weight, which sets its dtype, is fp32.
    fp32_stream: bool,
    eager: bool,
    gpt2: bool,
    base_trainable: bool,
    /// Which of the block's matmul inputs a Linear's weight or an adapter needs.
    inputs: SavedInputs,
    /// Eager attention's softmax probabilities (fp32, plus their 16-bit cast under autocast).
    probs: Exact,
    /// Layers with a dense MLP and layers with experts.
    layer_kinds: (Exact, Exact),
    /// The experts' grouped matmuls run outside autocast, in their weights' dtype; adapters'
    /// delta weights are in the trainable dtype.
    expert_bytes: Exact,
    trainable_bytes: Exact,
}

impl<'a> Ctx<'a> {
    #[inline(always)]
    fn new(model: &'a ModelShape, plan: &'a TrainingPlan, settings: &MemorySettings) -> Self {
        let totals = plan.totals();
        let act = settings.activations;
        let precision = settings.precision;
        let d = model.dims;
        let b = Exact::from(settings.workload.batch);
        // A regime's virtual tokens (prompt tuning) lengthen every sequence.
        let s = Exact::from(settings.workload.seq) + Exact::from(totals.extra_tokens);
        let t = b * s;
        let h = Exact::from(d.hidden);
        let c = Exact::from(precision.compute_dtype().bytes());
        let autocast = precision.autocast();
        let act = ActivationSettings {
            attention: act.attention.on(model),
            ..act
        };
        let eager = act.attention == AttentionImpl::Eager;
        let a = Exact::from(d.heads);
        // The fp32 softmax is saved, and so is its 16-bit cast that the matmul with V reads
        // (under autocast, and in pure 16-bit training: `softmax(..., dtype=float32).to(q.dtype)`).
        // GPT-2's softmax keeps the scores' dtype: over 16-bit weights (pure 16-bit or a 16-bit
        // frozen base) only the 16-bit probabilities are saved (measured in
        // `fixtures/memory/measured_peak.json`).
        let weights_dtype = settings.base_weights_dtype(totals);
        let probs_bytes = if model.block.recipe == ActivationRecipe::Gpt2
            && weights_dtype == precision.compute_dtype()
        {
            c
        } else if c != Exact::new(4) {
            4 + c
        } else {
            Exact::new(4)
        };
        let probs = if eager {
            a * s * s * b * probs_bytes
        } else {
            Exact::ZERO
        };
        let sparse = match model.mlp {
            MlpLayout::Experts(e) => e.sparse_layers,
            _ => 0,
        };
        Ctx {
            model,
            plan,
            totals,
            act,
            b,
            s,
            t,
            h,
            layers: Exact::from(d.layers),
            v: Exact::from(d.vocab),
            a,
            kv: Exact::from(d.kv_heads),
            dh: Exact::from(d.head_dim),
            c,
            c_bytes: precision.compute_dtype().bytes(),
            resid: if autocast { Exact::new(4) } else { c },
            th: t * h,
            cth: c * t * h,
            autocast,
            fp32_stream: autocast && weights_dtype == DType::F32,
            eager,
            gpt2: model.block.recipe == ActivationRecipe::Gpt2,
            base_trainable: totals.base_trainable,
            inputs: SavedInputs::of(plan, totals.base_trainable),
            probs,
            layer_kinds: (
                Exact::from(d.layers - sparse.min(d.layers)),
                Exact::from(sparse),
            ),
            expert_bytes: Exact::from(weights_dtype.bytes()),
            trainable_bytes: Exact::from(precision.trainable_dtype().bytes()),
        }
    }

    /// The output projection saves its input as it reads it: trained, or adapted without
    /// autocast (under autocast the adapter saves its own fp32 cast, counted with the block).
    fn o_proj_input_saved(&self) -> bool {
        self.inputs.all || (self.totals.adapts_attention_output && !self.autocast)
    }

    /// The final norm's saved bytes: GPT-2's LayerNorm its input and per-token statistics; an
    /// RMSNorm its fp32 input, the fp32 `rsqrt` per token and (trained weight) the normalized
    /// input.
    fn final_norm(&self) -> Exact {
        if self.gpt2 {
            self.resid * self.th + 8 * self.t
        } else {
            4 * self.th + 4 * self.t + self.normalized()
        }
    }

    /// What a trained norm weight's backward keeps: the normalized input.
    fn normalized(&self) -> Exact {
        if self.base_trainable {
            self.resid * self.th
        } else {
            Exact::ZERO
        }
    }

    /// An RMSNorm over `width` features in `groups` groups per token: the fp32 input, the fp32
    /// `rsqrt` per group, and (trained weight) the normalized input in `dtype_bytes`.
    fn rms(&self, width: Exact, groups: Exact, dtype_bytes: Exact) -> Exact {
        let normalized = if self.base_trainable {
            dtype_bytes * self.t * width
        } else {
            Exact::ZERO
        };
        4 * self.t * width + 4 * self.t * groups + normalized
    }
}

/// The block's matmul inputs kept for the Linears whose weight or adapter reads them: all of
/// them when the base trains; otherwise those of the adapters whose own matmul reads their
/// module's input ([`AdapterInput::Matmul`]), by the input they read. (A plan adapting q and v
/// only saves the attention input, cast once per adapter under autocast, and no MLP input.)
#[derive(Debug, Clone, Copy)]
struct SavedInputs {
    /// The base trains: every input is saved.
    all: bool,
    /// Otherwise the inputs the adapters read (the plan's [`crate::AdaptedInputs`]; with a
    /// training base only `any` is set).
    adapted: crate::AdaptedInputs,
}

impl SavedInputs {
    #[inline]
    fn of(plan: &TrainingPlan, base_trainable: bool) -> Self {
        let adapted = if base_trainable {
            crate::AdaptedInputs {
                any: true,
                ..crate::AdaptedInputs::default()
            }
        } else {
            plan.totals().adapted_inputs
        };
        SavedInputs {
            all: base_trainable,
            adapted,
        }
    }

    /// The copies saved of an input that `consumers` Linears read and `adapted` adapters save:
    /// one per reader under autocast (each casts it on its own), one without.
    fn copies(&self, consumers: u64, adapted: u64, autocast: bool) -> u64 {
        let n = if self.all {
            consumers
        } else {
            adapted.min(consumers)
        };
        if autocast { n } else { n.min(1) }
    }

    fn attention_saved(&self) -> bool {
        self.all || self.adapted.attention > 0
    }

    fn mlp_saved(&self) -> bool {
        self.all || self.adapted.mlp > 0
    }

    fn down_saved(&self) -> bool {
        self.all || self.adapted.down
    }
}

/// One block's saved bytes: attention, the MLP of a dense layer and of an expert layer, the
/// norms, and the first norm (which saves nothing when the embedding is frozen).
struct Block {
    attn: Exact,
    mlp_dense: Exact,
    mlp_sparse: Exact,
    norms: Exact,
    first_norm: Exact,
}

/// GPT-2 (LayerNorm, Conv1D, gelu_new), measured.
fn gpt2_block(x: &Ctx) -> Block {
    let cti = x.c * x.t * Exact::from(x.model.dims.intermediate);
    let ln = x.resid * x.th + 8 * x.t;
    let saved = |yes: bool, bytes: Exact| if yes { bytes } else { Exact::ZERO };
    let attn_in = saved(x.inputs.attention_saved(), x.cth);
    let mlp_in = saved(x.inputs.mlp_saved(), x.cth) + saved(x.inputs.down_saved(), cti);
    let attn = if x.eager {
        4 * x.cth + x.probs
    } else {
        6 * x.cth + 4 * x.b * x.a * x.s
    };
    let mlp = 4 * cti + mlp_in;
    Block {
        attn: attn + attn_in,
        mlp_dense: mlp,
        mlp_sparse: mlp,
        norms: 2 * ln,
        first_norm: ln,
    }
}

/// A LLaMA-style decoder block built from its parts: norms, q/k/v (separate, fused or latent),
/// q/k norms, the attention kernel, and a plain, gated or mixture-of-experts MLP.
fn decoder_block(x: &Ctx) -> Block {
    let model = x.model;
    let block = model.block;
    // RMSNorm keeps its fp32 input, the rsqrt and (trained weight) the normalized input;
    // LayerNorm (`native_layer_norm`) keeps its input, mean and rstd whether trained or not
    // (measured on falcon and phi: no normalized copy).
    let rms = match model.norm {
        NormKind::RmsNorm => x.rms(x.h, Exact::new(1), x.resid),
        NormKind::LayerNorm { .. } | NormKind::NonParametricLayerNorm => x.resid * x.th + 8 * x.t,
    };
    let norms = Exact::from(u64::from(block.norms.max(1))) * rms;
    let attn = decoder_attention(x);
    let (mlp_dense, mlp_sparse) = decoder_mlp(x);
    // Parallel blocks without autocast: attention and the MLP save the same normalized input.
    let shared = if block.norm_placement == NormPlacement::Parallel
        && block.norms == 1
        && !x.autocast
        && x.inputs.attention_saved()
        && x.inputs.mlp_saved()
    {
        x.cth
    } else {
        Exact::ZERO
    };
    // Post-norm blocks (OLMo 2) normalize sublayer outputs: no norm reads the embedding.
    let first_norm = if block.norm_placement == NormPlacement::Post {
        Exact::ZERO
    } else {
        rms
    };
    Block {
        attn: attn.saturating_sub(shared),
        mlp_dense,
        mlp_sparse,
        norms,
        first_norm,
    }
}

/// The mask a sliding-window layer saves under sdpa, and the number of such layers. transformers
/// builds a boolean `b x 1 x s x s` sliding-window mask once `seq >= window` (below it the causal
/// kernel alone is exact); `scaled_dot_product_attention` converts it to an additive mask in the
/// query's dtype on every call (`convert_boolean_attn_mask`), and the kernel keeps that copy for
/// its backward: `c b s s` per sliding layer (measured on gemma3_text, fp32 and bf16 autocast;
/// CUDA's memory-efficient kernel, the one sdpa picks when a mask is given, pads the last
/// dimension to a multiple of 16). Full-attention layers run causal without a mask; eager adds
/// the mask without saving it, and FlashAttention takes the window as an argument.
fn sliding_window_mask(x: &Ctx) -> (Exact, Exact) {
    match x.model.block.sliding_window {
        Some(w) if x.act.attention == AttentionImpl::Sdpa && x.s >= Exact::new(w.window) => {
            let padded =
                x.s.get()
                    .map_or(u64::MAX, |s| s.div_ceil(16).saturating_mul(16));
            (x.c * x.b * x.s * padded, Exact::new(w.layers))
        }
        _ => (Exact::ZERO, Exact::ZERO),
    }
}

/// What the model's output and its forward keep alive until the training loop drops the output
/// (through transformers' loss, which runs inside the forward; gone when the backward starts),
/// beyond the saved tensors and the logits, for one micro-batch:
///
/// - The final norm's output, which the output head reads, in the residual stream's dtype: saved
///   as it is only by a trained head without autocast (under autocast the head saves its cast).
/// - Without checkpointing (transformers turns the cache off with it), the `DynamicCache` the
///   forward fills with every layer's keys (after the rotary embedding, whose `cos`/`sin` are in
///   the stream's dtype) and values (the projection's output), where the attention kernel did not
///   save those very tensors: autocast casts them to the compute dtype first, and eager
///   attention repeats grouped key/value heads. GPT-2's cache is counted with its saved tensors;
///   latent attention's is not modelled.
///
/// Measured with `MemTracker` (loss phase) on llama (fp32, autocast, a bf16 base, LoRA and full
/// fine-tuning) and qwen3_moe QLoRA. Saturating: the timeline's bound rejects an absurd sum.
fn output_held(x: &Ctx) -> u64 {
    if x.gpt2 {
        return 0;
    }
    let model = x.model;
    let d = &model.dims;
    let c = x.c_bytes;
    // The residual stream: fp32 under autocast over fp32 weights, else the compute dtype.
    let stream = if x.fp32_stream { 4 } else { c };
    let mut per_token = if x.base_trainable && !x.autocast {
        0
    } else {
        stream.saturating_mul(d.hidden)
    };
    if x.act.checkpointing == Checkpointing::None
        && !matches!(model.attention, AttentionLayout::Latent(_))
    {
        // Keys (after the rotary embedding) and values, in bytes per element, that the kernel
        // did not save itself. Only over an fp32 stream under autocast do they differ from the
        // kernel's compute dtype: the rotary embedding's fp32 `cos`/`sin` promote the keys, and
        // bitsandbytes' 4-bit Linears return their fp32 input's dtype. Otherwise (no autocast, or
        // a 16-bit stream) keys, values and the kernel share one dtype.
        let mut cached = 0;
        let mut whole = 2 * stream;
        if x.fp32_stream {
            let projection = if x.plan.nf4_block_linears() { 4 } else { c };
            let key = if matches!(model.positions, PositionKind::Rotary) {
                4
            } else {
                projection
            };
            let unshared = |bytes: u64| if bytes == c { 0 } else { bytes };
            cached = unshared(key) + unshared(projection);
            whole = key + projection;
        }
        if x.eager && d.kv_heads != d.heads {
            // Eager attention saves the repeated heads: the cache's own are not shared.
            cached = whole;
        }
        if cached > 0 {
            per_token = per_token.saturating_add(
                cached
                    .saturating_mul(d.kv_heads)
                    .saturating_mul(d.head_dim)
                    .saturating_mul(d.layers),
            );
        }
    }
    x.t.get().map_or(u64::MAX, |t| t.saturating_mul(per_token))
}

/// Under sdpa, whether the output projection reads a copy of the kernel's output rather than a
/// view of it. The kernel allocates its output in the query's memory layout and the model makes
/// it `(b, s, a d)` contiguous for o_proj: a view when the query still has the projection's
/// `(b, s, a, d)` layout (full rotary: `q cos + rotate_half(q) sin` keeps it), a copy when a
/// `cat` made the query contiguous in `(b, a, s, d)` (partial rotary, and latent attention's
/// concatenated query, whose output is also sliced back to the value width). Measured with
/// saved-tensor hooks (CPU's flash kernel) on glm4_moe and qwen3_moe.
fn o_proj_reads_a_copy(x: &Ctx) -> bool {
    let model = x.model;
    let partial_rotary = matches!(model.positions, PositionKind::Rotary)
        && model
            .block
            .rotary_dim
            .is_some_and(|r| r < model.dims.head_dim);
    // FlashAttention writes its output in `(b, s, a, d)` whatever the query's layout.
    x.act.attention == AttentionImpl::Sdpa
        && (partial_rotary || matches!(model.attention, AttentionLayout::Latent(_)))
}

/// Attention: input casts, projections, q/k norms and the kernel's saved tensors.
fn decoder_attention(x: &Ctx) -> Exact {
    let model = x.model;
    let (c, t) = (x.c, x.t);
    let readers = match model.attention {
        AttentionLayout::Separate => 3,
        AttentionLayout::FusedQkv => 1,
        AttentionLayout::Latent(l) => 1 + u64::from(l.q_lora_rank.is_some()),
    };
    let casts = x
        .inputs
        .copies(readers, x.inputs.adapted.attention, x.autocast);
    let input = Exact::new(casts) * x.cth;
    // Per head: the query/key width, the value width, and the kernel's key/value heads.
    let (dq, dv, kv_heads, mut extra) = match model.attention {
        AttentionLayout::Latent(l) => {
            let (rope, nope) = (
                Exact::from(l.qk_rope_head_dim),
                Exact::from(l.qk_nope_head_dim),
            );
            let kvr = Exact::from(l.kv_lora_rank);
            // The low-rank projections' norms and the inputs of q_b and kv_b.
            let mut extra = x.rms(kvr, Exact::new(1), c);
            if x.inputs.adapted.any {
                extra += c * t * kvr;
            }
            if let Some(q) = l.q_lora_rank {
                let q = Exact::from(q);
                extra += x.rms(q, Exact::new(1), c);
                if x.inputs.adapted.any {
                    extra += c * t * q;
                }
            }
            (rope + nope, Exact::from(l.v_head_dim), x.a, extra)
        }
        _ => (x.dh, x.dh, x.kv, Exact::ZERO),
    };
    let a = x.a;
    extra += match model.block.qk_norm {
        QkNorm::None => Exact::ZERO,
        QkNorm::HeadDim | QkNorm::OneTensorPerHead => {
            x.rms(a * dq, a, c) + x.rms(kv_heads * dq, kv_heads, c)
        }
        QkNorm::AllHeads => {
            x.rms(a * dq, Exact::new(1), c) + x.rms(kv_heads * dq, Exact::new(1), c)
        }
    };
    // transformers pads latent attention's values to the query/key width for sdpa.
    let dv_kernel = match model.attention {
        AttentionLayout::Latent(_) if !x.eager => dq,
        _ => dv,
    };
    let kernel = if x.eager {
        // q and the repeated k, v; the probabilities; the merged output read by o_proj; the
        // soft-capped scores (Gemma 2: tanh keeps its output).
        let capped = if model.block.logit_softcap {
            c * a * x.s * x.s * x.b
        } else {
            Exact::ZERO
        };
        c * t * a * (2 * dq + dv) + x.probs + capped + c * t * a * dv
    } else {
        c * t * (a * (dq + dv_kernel) + kv_heads * (dq + dv_kernel)) + 4 * x.b * a * x.s
    };
    // The output projection's saved input, when it is a copy of the kernel's output
    // ([`o_proj_reads_a_copy`]) and saved as it is read.
    let o_proj_copy = if x.o_proj_input_saved() && o_proj_reads_a_copy(x) {
        c * t * a * dv
    } else {
        Exact::ZERO
    };
    input + extra + kernel + o_proj_copy
}

/// The MLP of a dense layer and of a mixture-of-experts layer (routed experts per token, the
/// router's logits, shared experts).
fn decoder_mlp(x: &Ctx) -> (Exact, Exact) {
    let model = x.model;
    let (c, t) = (x.c, x.t);
    // Over NF4 weights every reader is bitsandbytes' `Linear4bit` (checked only where it
    // matters: autocast over an fp32 stream).
    let all_fp32_readers = x.fp32_stream && c != Exact::new(4) && x.plan.nf4_block_linears();
    // A dense MLP of width `i`: its input (one cast per consuming Linear under autocast), the
    // input of down, and what the activation keeps (gate, act(gate), up; or up and act(up)).
    let dense = |layout: MlpLayout, i: Exact| {
        let cti = c * t * i;
        let (saved, readers) = match layout {
            // The activation keeps its input (four tensors for Python `gelu_new`); its output
            // is down's saved input (below).
            MlpLayout::Plain => match model.block.mlp_activation {
                MlpActivation::GeluNewPython => (4 * cti, 1),
                MlpActivation::Fused | MlpActivation::ClampedSwiGlu => (cti, 1),
            },
            MlpLayout::FusedGated => (3 * cti, 1),
            MlpLayout::Gated | MlpLayout::Experts(_) => (3 * cti, 2),
        };
        // Readers returning their input's dtype make their share of it fp32 under autocast over
        // an fp32 residual stream (over a 16-bit base they return 16 bits): adapted ones whose
        // adapter does, and every one over NF4 weights, adapted or not (bitsandbytes'
        // `Linear4bit`; measured with QLoRA on q_proj and v_proj only).
        let fp32_readers = if all_fp32_readers {
            readers
        } else {
            x.inputs.adapted.mlp_input_dtype_outputs.min(readers)
        };
        let saved = if x.fp32_stream && fp32_readers > 0 && c != Exact::new(4) {
            let widened = saved * Exact::from(fp32_readers) * Exact::new(4) / c;
            (saved * Exact::from(readers - fp32_readers) + widened) / Exact::from(readers)
        } else {
            saved
        };
        let casts = x.inputs.copies(readers, x.inputs.adapted.mlp, x.autocast);
        let mut input = Exact::new(casts) * x.cth;
        if x.inputs.down_saved() {
            input += cti;
        }
        saved + input
    };
    let inter = Exact::from(model.dims.intermediate);
    match model.mlp {
        MlpLayout::Experts(e) => {
            // transformers 5's fused experts, measured on qwen3_moe and qwen2_moe: each of the `T k` routed
            // token slots keeps its gathered input (gate_up's input) and its expert output (for
            // the routing-weight product), the gate_up output `2 I` and act(gate) and the
            // product `I` each; the dispatch keeps three int64 index vectors per slot, the
            // router its fp32 logits (`E` per token) and the top-k weights.
            let k = Exact::from(e.top_k);
            let tk = t * k;
            let i = Exact::from(e.intermediate);
            // The experts' grouped matmuls run outside autocast, in their weights' dtype.
            let act = match model.block.mlp_activation {
                MlpActivation::ClampedSwiGlu => 7,
                _ => 4,
            };
            // Experts adapted through peft's `ParamWrapper` (peft 0.21's `_LoraFactorsProxy`)
            // run on `W + scaling (B A)`, made by one `baddbmm` in the weights' own dtype
            // (`E x in x out` per wrapped parameter and layer), which the grouped matmul saves;
            // over a base in another dtype than the adapters', `baddbmm` also saves the two
            // factors cast to it (`rank x E x (in + out)`). Measured with saved-tensor hooks on
            // qwen3_moe: fp32, bf16 autocast over fp32 and over a bf16 base. A frozen, unadapted
            // expert needs no saved input for its weight.
            let mut delta = Exact::ZERO;
            // The router's matmul (`F.linear`, under autocast in the compute dtype) saves its
            // input when its weight is trained or adapted, and an adapted router (peft's
            // `ParamWrapper`) runs on its merged weight `W + s B A` (`E x h`), with the factors
            // cast to the compute dtype beside it when they are in another.
            let mut router_input = x.base_trainable;
            for site in x.plan.adapters() {
                let m = &model.modules[site.module];
                if m.group == ModuleGroup::Router
                    && matches!(m.host, crate::shape::AdapterHost::Parameter { .. })
                {
                    router_input = true;
                    let (fan_in, fan_out) =
                        (Exact::from(m.in_features), Exact::from(m.out_features));
                    delta += c * fan_in * fan_out;
                    if c != x.trainable_bytes {
                        delta += c * Exact::from(site.rank) * (fan_in + fan_out);
                    }
                }
                if m.fused_experts() {
                    let per_layer = Exact::from(m.count / e.sparse_layers.max(1));
                    let (fan_in, fan_out) =
                        (Exact::from(m.in_features), Exact::from(m.out_features));
                    delta += x.expert_bytes * per_layer * fan_in * fan_out;
                    if x.expert_bytes != x.trainable_bytes {
                        delta += x.expert_bytes
                            * Exact::from(site.rank)
                            * per_layer
                            * (fan_in + fan_out);
                    }
                }
            }
            let input_saved = x.base_trainable || delta != Exact::ZERO;
            let inputs = if input_saved { 2 } else { 1 };
            // Per routed slot: the top-k indices and weights (int64, fp32), the dispatch's
            // three int64 index vectors and the slot's routing weight in the compute dtype; per
            // expert its int32 token count.
            let mut sparse = x.expert_bytes * tk * (inputs * x.h + act * i)
                + (36 + c) * tk
                + 4 * Exact::from(e.experts)
                + delta;
            sparse += 4 * t * Exact::from(e.experts) + 4 * t;
            if let Some((groups, top_groups)) = e.routing_groups {
                // Each group's top-2 indices, the chosen groups (int64) and the bool mask.
                sparse += t
                    * (16 * Exact::from(u64::from(groups))
                        + 8 * Exact::from(u64::from(top_groups))
                        + Exact::from(e.experts));
            }
            // Over fp32 without autocast the router reads the very tensor the shared experts'
            // saved input is (counted with them).
            let shared_saves_input = !x.autocast
                && e.shared.is_some()
                && x.inputs.copies(2, x.inputs.adapted.mlp, x.autocast) > 0;
            if router_input && !shared_saves_input {
                sparse += x.cth;
            }
            if let Some(shared) = e.shared {
                sparse += dense(MlpLayout::Gated, Exact::from(shared.intermediate));
                if shared.gate {
                    sparse += c * t;
                }
            }
            (dense(MlpLayout::Gated, inter), sparse)
        }
        layout => {
            let m = dense(layout, inter);
            (m, m)
        }
    }
}

/// The recomputed MLP's backward, per layer kind (dense, experts): its saved bytes at the moment
/// the gradients in flight are largest, and those gradients ([`RecomputePeak`]). A dense MLP has
/// consumed its down projection's saved input (`c T i`, when saved) and holds `3 c T i`; an expert
/// layer holds `3 T k h` in the experts' weight dtype (measured on qwen3_moe, fp32 and bf16
/// autocast).
fn mlp_backward(x: &Ctx, mlp_dense: Exact, mlp_sparse: Exact) -> ((Exact, Exact), (Exact, Exact)) {
    let cti = x.c * x.t * Exact::from(x.model.dims.intermediate);
    let down_input = if x.inputs.down_saved() {
        cti
    } else {
        Exact::ZERO
    };
    let dense = (mlp_dense.saturating_sub(down_input), 3 * cti);
    let sparse = match x.model.mlp {
        MlpLayout::Experts(e) => (
            mlp_sparse,
            3 * x.expert_bytes * x.t * Exact::from(e.top_k) * x.h,
        ),
        _ => dense,
    };
    (dense, sparse)
}

/// Dropout's saved bytes, measured in `fixtures/memory/measured_memory_ckpt_dropout.json` with
/// the GPU kernels (`native_dropout`, whose backward keeps a 1-byte mask; fused sdpa, which keeps
/// only an RNG seed and offset). Full fine-tuning matches these terms to the byte.
#[derive(Default)]
struct Dropout {
    /// Per block.
    attention: Exact,
    mlp: Exact,
    /// GPT-2's embedding dropout.
    outside_blocks: Exact,
    /// peft's `lora_dropout`, all layers.
    adapters: Exact,
}

fn dropout_terms(x: &Ctx) -> Dropout {
    let mut d = Dropout::default();
    if !x.act.dropout_masks() {
        return d;
    }
    // Residual dropout after the attention and the MLP: only GPT-2-style blocks (and Phi-3)
    // have it. Llama, Mistral, Qwen2, Gemma and Mixtral drop nothing in the residual stream:
    // measured 0 bytes with sdpa on llama and mistral.
    if x.model.block.residual_dropout {
        d.attention += x.th;
        d.mlp += x.th;
    }
    // Eager attention drops the probabilities: a 1-byte mask, and the matmul with V saves the
    // dropped probabilities instead of what it read before. Under autocast that was the 16-bit
    // cast, which is no longer saved (same size): `+1` byte per element. Without a cast it was
    // the softmax output itself, still saved for the softmax's backward: `+1+c`. Measured on
    // gpt2, llama, mistral: +5 B (fp32), +1 B (autocast) x b a s^2 per layer.
    if x.eager {
        d.attention += x.a * x.s * x.s * x.b * (1 + if x.autocast { Exact::ZERO } else { x.c });
    }
    // GPT-2 drops the embedding output (`T h` mask) when anything upstream needs its gradient:
    // a trained embedding, or checkpointing (transformers then makes the embedding output
    // require grad).
    if x.gpt2 && (x.base_trainable || x.act.checkpointing.recomputes()) {
        d.outside_blocks += x.th;
    }
    d.adapters = adapter_dropout(x);
    d
}

/// peft's `lora_dropout` drops each adapted module's input on its own: a 1-byte mask per module
/// (none when the input needs no gradient: the first block's q, k, v with a frozen embedding and
/// no checkpointing), and lora_A saves its own dropped copy. Under autocast lora_A saved its own
/// 16-bit cast already, so only the mask is new. Without autocast each copy (`c T in`) is new,
/// and the undropped inputs that were saved only for the adapters (frozen base) are saved by
/// nobody now: the attention input, the MLP inputs and, with eager attention, the merged
/// attention output read by o_proj (sdpa keeps its output for its own backward). Measured
/// exactly for LoRA on gpt2, llama and mistral.
fn adapter_dropout(x: &Ctx) -> Exact {
    let (model, plan) = (x.model, x.plan);
    let mut total = Exact::ZERO;
    let first_block_input_frozen = !x.base_trainable && x.act.checkpointing == Checkpointing::None;
    for site in plan.adapters() {
        let m = &model.modules[site.module];
        let per_module = Exact::from(m.in_features) * x.t;
        let count = Exact::from(m.count);
        let mut masked = count;
        if first_block_input_frozen {
            masked = masked.saturating_sub(Exact::from(m.first_block_instances(model.dims.layers)));
        }
        total += per_module * masked;
        if !x.autocast {
            total += x.c * per_module * count;
        }
    }
    if !x.autocast && !x.base_trainable && !plan.adapters().is_empty() {
        let adapted = |f: &dyn Fn(&crate::shape::LinearModule) -> bool| {
            plan.adapters()
                .iter()
                .any(|site| f(&model.modules[site.module]))
        };
        let cti = x.c * x.t * Exact::from(model.dims.intermediate);
        let mut unsaved = Exact::ZERO;
        if adapted(&|m| m.reads_attention_input) {
            unsaved += x.cth;
        }
        if adapted(&|m| m.group == ModuleGroup::Mlp) {
            unsaved += x.cth + cti;
        }
        if x.eager && adapted(&|m| m.group == ModuleGroup::Attention && !m.reads_attention_input) {
            unsaved += x.cth;
        }
        total = total.saturating_sub(unsaved * x.layers);
    }
    total
}

/// The largest block's terms, for the checkpointed step.
struct CheckpointedBlock {
    attn: Exact,
    mlp: Exact,
    /// The recomputed MLP's saved bytes and its backward's gradients in flight, for a dense
    /// block and for an expert block (`None`: the model has no such block).
    mlp_backward: [Option<(Exact, Exact)>; 2],
    /// What a recomputed block has freed when eager attention's softmax backward runs.
    attention_freed: Exact,
    norms: Exact,
    adapter_dropout: Exact,
    final_norm: Exact,
}

/// transformers' `gradient_checkpointing_enable()` (non-reentrant `torch.utils.checkpoint` per
/// decoder layer), measured as the peak over the whole step of the live saved bytes
/// (`fixtures/memory/measured_memory_ckpt_dropout.json`). Each checkpoint keeps its block's
/// input (`r T h`), and with eager attention its 4D float mask (`r b s^2`, bound into every
/// block's arguments). The backward recomputes the last block first, while every checkpoint is
/// still alive and the final norm's and the loss's tensors are already freed: the step peaks
/// either there (one block's saved tensors, sharing the block input with the first norm when that
/// norm saves the fp32 residual as it is) or at the end of the forward (checkpoints, final norm,
/// logits and loss), whichever is larger: 133 of the 144 measured steps peak in the backward,
/// mistral's 2048-token vocabulary under autocast at the forward's end, and this picks the same
/// moment on every one (activations within 3.2% of the measured peak on all of them).
fn checkpointed(x: &Ctx, plan: &TrainingPlan, blk: CheckpointedBlock, parts: &mut Parts) {
    let rope = parts.attention;
    // The checkpoints (each block's input, eager attention's mask) are the residual stream in
    // its own dtype: fp32 over an fp32 embedding under autocast, 16 bits over a 16-bit base
    // (measured on LoRA and QLoRA over a bf16 base); the first norm's fp32 copy of a 16-bit
    // input is then a tensor of its own.
    let stream = if x.fp32_stream || !x.autocast {
        x.resid
    } else {
        x.c
    };
    let checkpoints = stream * x.th * x.layers
        + if x.eager {
            stream * x.b * x.s * x.s
        } else {
            Exact::ZERO
        };
    let shared_input = if x.gpt2 || stream == Exact::new(4) {
        stream * x.th
    } else {
        Exact::ZERO
    };
    // transformers turns the KV cache off under checkpointing; GPT-2's sdpa path saved the
    // cache's copies of k and v (`2 c T h` per layer; measured: the same non-checkpointed step
    // with `use_cache=False` saves exactly that much less).
    let mut attn_block = blk.attn;
    if x.gpt2 && !x.eager {
        attn_block = attn_block.saturating_sub(2 * x.cth);
    }
    // Regime terms per token are per layer: one layer's worth is recomputed. Their fixed parts
    // are weight-sized temporaries (DoRA's `eye(in)` weight-norm graph, GPT-2's transposed
    // weight) that live one module at a time: the peak holds the largest one (measured on DoRA:
    // the block's last, largest module, down_proj or c_proj, adds its graph on top of the block
    // while the recomputation runs).
    let layers_or_one = x.layers.max(Exact::new(1));
    let [per_token, _] = x.totals.compute_terms.map(Exact::new);
    let [per_token_bytes, _] = x.totals.dense_term_bytes.map(Exact::new);
    let [autocast_per_token, _] = x.totals.autocast_terms.map(Exact::new);
    let autocast_per_token = if x.autocast {
        autocast_per_token
    } else {
        Exact::ZERO
    };
    let per_token_terms = ((per_token + autocast_per_token) * x.c + per_token_bytes) * x.t;
    let largest_fixed = plan
        .activation_terms()
        .iter()
        .map(|term| {
            let bytes = match term.dtype {
                ActivationDtype::Compute => x.c,
                ActivationDtype::Dense(dt) => Exact::from(dt.bytes()),
                ActivationDtype::AutocastCopy if x.autocast => x.c,
                ActivationDtype::AutocastCopy => Exact::ZERO,
            };
            Exact::from(term.fixed) * bytes
        })
        .max()
        .unwrap_or(Exact::ZERO);
    let block_regime = (per_token_terms + largest_fixed + blk.adapter_dropout) / layers_or_one;
    let block = (attn_block + blk.mlp + blk.norms + block_regime).saturating_sub(shared_input);
    let tail = blk.final_norm + parts.logits_loss;
    let kept = rope + checkpoints + parts.embeddings;
    // While block `i` is recomputed the checkpoints of blocks `0..=i` are alive (the timeline
    // adds them): each kind's saved bytes without the blocks' checkpoints.
    let block_checkpoints = stream * x.th * x.layers;
    let kept_without_checkpoints = kept.saturating_sub(block_checkpoints);
    // Eager attention's backward, once the block's MLP backward is done (its saved tensors
    // freed): the fp32 gradients of the softmax's output and input (`2 x 4 b a s^2`) and the
    // attention output's (`r T h`) in flight. Measured on qwen3_moe (a bf16 base, 4 x 128).
    let attention_saved = kept_without_checkpoints
        + (attn_block + blk.norms + block_regime)
            .saturating_sub(shared_input + blk.attention_freed);
    let mut attention_in_flight = if x.eager {
        8 * x.b * x.a * x.s * x.s + x.resid * x.th
    } else {
        Exact::ZERO
    };
    // Inside an MLP backward the residual's gradient is in flight too. Over an fp32 stream
    // (autocast over fp32 weights, or fp32) the MLP-side norm saves the residual after the
    // attention as it is; the block recomputes it with a bare `add` inside the backward, so
    // `MemTracker` books it as a temporary, not an activation (checked tensor by tensor on llama
    // and qwen3_moe). A 16-bit stream's norm saves its fp32 copy instead, an activation.
    let (mut residual, residual_booked) = if x.fp32_stream || !x.autocast {
        (2 * stream * x.th, stream * x.th)
    } else {
        (stream * x.th, Exact::ZERO)
    };
    // Reentrant checkpointing keeps the recomputed block's output while its backward runs.
    let block_output = if x.act.checkpointing == Checkpointing::Reentrant {
        stream * x.th
    } else {
        Exact::ZERO
    };
    residual += block_output;
    if attention_in_flight != Exact::ZERO {
        attention_in_flight += block_output;
    }
    let [dense, sparse] = blk.mlp_backward.map(|kind| {
        kind.map_or([Exact::ZERO; 2], |(mlp_saved, in_flight)| {
            let saved = (attn_block + mlp_saved + blk.norms + block_regime)
                .saturating_sub(shared_input + residual_booked);
            [kept_without_checkpoints + saved, residual + in_flight]
        })
    });
    parts.checkpointed = Some(RecomputePeak {
        at_backward_start: kept + tail,
        at_recompute: dense[0].max(sparse[0]).max(attention_saved) + block_checkpoints,
        detail: [dense, sparse, [attention_saved, attention_in_flight]],
        checkpoint: stream * x.th,
    });
    if block >= tail {
        parts.attention = rope + attn_block;
        parts.mlp = blk.mlp;
        parts.norms = (blk.norms + checkpoints).saturating_sub(shared_input);
        parts.logits_loss = Exact::ZERO;
        parts.regime = block_regime;
    } else {
        parts.attention = rope;
        parts.mlp = Exact::ZERO;
        parts.norms = checkpoints + blk.final_norm;
        parts.regime = Exact::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemorySettings, Precision, Workload};
    use crate::spec::TransformerSpec;

    fn settings(attention: AttentionImpl, checkpointing: Checkpointing) -> MemorySettings {
        MemorySettings {
            precision: Precision::AmpBf16,
            activations: ActivationSettings {
                model: ActivationModel::Model,
                attention,
                checkpointing,
                dropout: None,
            },
            workload: Workload { batch: 2, seq: 512 },
            ..MemorySettings::seed()
        }
    }

    fn full_plan(model: &ModelShape) -> TrainingPlan {
        let mut plan = TrainingPlan::default();
        for (i, p) in model.params.iter().enumerate() {
            plan.push_group(
                model,
                crate::plan::PlannedParams {
                    source: crate::plan::ParamSource::Base { param: i },
                    numel: p.numel,
                    count: p.count,
                    trainable: true,
                    origin: crate::plan::ParamOrigin::Base,
                    storage: crate::plan::Storage::Policy,
                    matmul_weight: false,
                },
            );
        }
        plan
    }

    /// FlashAttention keeps no `s^2` tensor (Dao et al. 2022: memory linear in the sequence):
    /// at a fixed batch, doubling the sequence doubles flash's attention bytes. Eager attention
    /// saves the softmax probabilities, `b a s^2` elements per layer in fp32 plus their bf16
    /// cast under autocast (6 bytes): doubling the sequence adds that quadratic part on top of
    /// the linear ones.
    #[test]
    fn flash_is_linear_in_seq_and_eager_pays_for_the_score_matrix() {
        let model = TransformerSpec::minigpt().build().unwrap();
        let plan = full_plan(&model);
        let estimate = |a, c, seq| {
            let mut s = settings(a, c);
            s.workload.seq = seq;
            estimate_activations(&model, &plan, &s).unwrap()
        };
        let attention = |a, seq| estimate(a, Checkpointing::None, seq).breakdown.attention;
        for seq in [128u64, 256, 512] {
            let flash = attention(AttentionImpl::Flash, seq);
            assert!(flash > 0);
            assert_eq!(
                attention(AttentionImpl::Flash, 2 * seq),
                2 * flash,
                "seq {seq}"
            );
            // minigpt: 4 layers, 4 heads; batch 2.
            let quadratic = 4 * 4 * 2 * 6 * ((2 * seq) * (2 * seq) - 2 * seq * seq);
            assert_eq!(
                attention(AttentionImpl::Eager, 2 * seq) - 2 * attention(AttentionImpl::Eager, seq),
                quadratic,
                "seq {seq}"
            );
        }
        let total = |c| estimate(AttentionImpl::Sdpa, c, 512).total;
        assert!(total(Checkpointing::Full) < total(Checkpointing::None) / 2);
    }

    /// sdpa's mask per sliding-window layer, against PyTorch: a gemma3_text step (window 16,
    /// two sliding layers, batch 2, seq 48, fp32) saves two `(2, 1, 48, 48)` fp32 masks of
    /// 18,432 bytes each (`saved_tensors_hooks`, torch 2.15, transformers 5.24); autocast saves
    /// them in bf16; below the window, with eager attention or with FlashAttention none. CUDA's
    /// kernel pads the last dimension to 16: seq 50 keeps `50 x 64` per row.
    #[test]
    fn sliding_window_layers_save_sdpa_masks() {
        let mut spec = TransformerSpec::minigpt();
        let plain = spec.build().unwrap();
        spec.block.sliding_window = Some(crate::SlidingWindow {
            window: 16,
            layers: 2,
        });
        let sliding = spec.build().unwrap();
        let masks = |precision, attention, seq| {
            let mut s = settings(attention, Checkpointing::None);
            s.precision = precision;
            s.workload.seq = seq;
            let attention = |model: &ModelShape| {
                let plan = full_plan(model);
                estimate_activations(model, &plan, &s)
                    .unwrap()
                    .breakdown
                    .attention
            };
            attention(&sliding) - attention(&plain)
        };
        assert_eq!(masks(Precision::Fp32, AttentionImpl::Sdpa, 48), 2 * 18_432);
        assert_eq!(masks(Precision::AmpBf16, AttentionImpl::Sdpa, 48), 18_432);
        assert_eq!(
            masks(Precision::Fp32, AttentionImpl::Sdpa, 16),
            2 * 4 * 2 * 16 * 16
        );
        assert_eq!(masks(Precision::Fp32, AttentionImpl::Sdpa, 15), 0);
        assert_eq!(masks(Precision::Fp32, AttentionImpl::Eager, 48), 0);
        assert_eq!(masks(Precision::Fp32, AttentionImpl::Flash, 48), 0);
        assert_eq!(
            masks(Precision::Fp32, AttentionImpl::Sdpa, 50),
            2 * 4 * 2 * 50 * 64
        );
    }

    /// transformers has no sdpa path for attention with sinks (gpt-oss): asked for sdpa, the
    /// model runs eager, and so do its activations and FLOPs.
    #[test]
    fn attention_sinks_run_eager_under_sdpa() {
        let mut spec = TransformerSpec::minigpt();
        spec.block.attention_sinks = true;
        let model = spec.build().unwrap();
        let plan = full_plan(&model);
        let run = |a| {
            let s = settings(a, Checkpointing::None);
            let flops = crate::step_flops(&model, &plan, &crate::FlopSettings::of(&s)).unwrap();
            (
                estimate_activations(&model, &plan, &s).unwrap().total,
                flops,
            )
        };
        assert_eq!(run(AttentionImpl::Sdpa), run(AttentionImpl::Eager));
        assert_ne!(run(AttentionImpl::Flash), run(AttentionImpl::Eager));
    }

    #[test]
    fn dropout_masks_cost_one_byte_per_element() {
        let model = TransformerSpec::minigpt().build().unwrap();
        let plan = full_plan(&model);
        let mut s = settings(AttentionImpl::Sdpa, Checkpointing::None);
        let without = estimate_activations(&model, &plan, &s).unwrap().total;
        s.activations.dropout = Some(0.1);
        let with = estimate_activations(&model, &plan, &s).unwrap().total;
        // Two residual-dropout masks of batch x seq x hidden bytes per layer.
        assert_eq!(with - without, 4 * 2 * (2 * 512 * 64));
        s.activations.dropout = Some(0.0);
        assert_eq!(
            estimate_activations(&model, &plan, &s).unwrap().total,
            without
        );
    }
}

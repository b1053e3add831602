//! Activation memory: what the forward pass saves for backward.
//!
//! Three models: the seed lab's rough rule, none, and a per-operation model of the Hugging Face
//! implementations (first cut from Korthikanti et al. 2022, `sbh(34 + 5as/h)` per layer with
//! 16-bit activations; to be corrected from measurements).

use super::MemorySettings;
use super::exact::Exact;
use crate::dtype::DType;
use crate::error::CountError;
use crate::plan::{ActivationDtype, Storage, TrainingPlan, first_block_elements};
use crate::shape::{AttentionLayout, Family, MlpLayout, ModelShape, ModuleGroup, PositionKind};
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
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(ActivationModel::Seed {
                bytes_per_element: 16,
            }),
            "model" => Ok(ActivationModel::Model),
            "none" => Ok(ActivationModel::None),
            other => Err(format!(
                "unknown activation model `{other}` (expected seed, model, none)"
            )),
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

impl fmt::Display for AttentionImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttentionImpl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "eager" => Ok(AttentionImpl::Eager),
            "sdpa" => Ok(AttentionImpl::Sdpa),
            "flash" | "flash-attention-2" | "flash_attention_2" => Ok(AttentionImpl::Flash),
            other => Err(format!(
                "unknown attention implementation `{other}` (expected eager, sdpa, flash)"
            )),
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
}

impl FromStr for Checkpointing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Checkpointing::None),
            "full" => Ok(Checkpointing::Full),
            other => Err(format!(
                "unknown checkpointing `{other}` (expected none, full)"
            )),
        }
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
            });
        }
        ActivationModel::Seed { bytes_per_element } => {
            let bytes = b * s * h * layers * u128::from(bytes_per_element);
            br.rough = to_u64(bytes)?;
            return Ok(ActivationResult {
                total: br.rough,
                weight_casts: 0,
                breakdown: br,
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
    let weight_casts = weight_cast_bytes(model, plan, settings);
    Ok(ActivationResult {
        total: bytes(total)?,
        weight_casts: to_u64(weight_casts)?,
        breakdown: br,
    })
}

/// Autocast's 16-bit weight copies that matmuls save: a weight's copy is saved when the matmul
/// needs it for the gradient of its input, that is, unless nothing upstream requires grad. With a
/// frozen embedding that is the case for the first block's q, k, v (base weights and LoRA A);
/// LoRA B's input always requires grad. Measured exactly on every record in `fixtures/memory`. A
/// weight already stored in the compute dtype (a bf16 base under bf16 autocast) is used as it is:
/// the saved tensor is the parameter itself, not a copy. Only the per-operation model counts them.
#[inline]
pub fn weight_cast_bytes(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> u128 {
    let precision = settings.precision;
    if !precision.autocast() || settings.activations.model != ActivationModel::Model {
        return 0;
    }
    let totals = plan.totals();
    let compute = precision.compute_dtype();
    let skip_first_block = !totals.base_trainable;
    let cast =
        |all: u128, first_block: u128, stored: DType| match (stored == compute, skip_first_block) {
            (true, _) => 0,
            (false, true) => all - first_block,
            (false, false) => all,
        };
    let [trainable, trainable_first] = totals.trainable_matmul.map(u128::from);
    let [frozen, frozen_first] = totals.frozen_matmul.map(u128::from);
    let mut elements = cast(trainable, trainable_first, precision.trainable_dtype())
        + cast(frozen, frozen_first, settings.frozen_dtype());
    if totals.dense_matmul {
        elements += dense_cast_elements(model, plan, &cast);
    }
    elements * u128::from(compute.bytes())
}

/// Fixed dense storage is rare: look at each group (kept out of the hot path).
#[cold]
#[inline(never)]
fn dense_cast_elements(
    model: &ModelShape,
    plan: &TrainingPlan,
    cast: &dyn Fn(u128, u128, DType) -> u128,
) -> u128 {
    let mut elements = 0;
    for g in plan.groups(model).filter(|g| g.matmul_weight) {
        if let Storage::Dense { dtype } = g.storage {
            let all = u128::from(g.numel) * u128::from(g.count);
            elements += cast(all, u128::from(first_block_elements(model, &g)), dtype);
        }
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
    let totals = plan.totals();
    let act = settings.activations;
    let precision = settings.precision;
    let d = model.dims;
    let b = Exact::from(settings.workload.batch);
    let s = Exact::from(settings.workload.seq) + Exact::from(totals.extra_tokens);
    let t = b * s;
    let (h, layers, i, v) = (
        Exact::from(d.hidden),
        Exact::from(d.layers),
        Exact::from(d.intermediate),
        Exact::from(d.vocab),
    );
    let a = Exact::from(d.heads);
    let kv = Exact::from(d.kv_heads);
    let dh = Exact::from(d.head_dim);
    let c = Exact::from(precision.compute_dtype().bytes());
    // Shared products (token x hidden, in the compute dtype).
    let th = t * h;
    let cth = c * th;
    let cti = c * t * i;
    let autocast = precision.autocast();
    let resid = if autocast { Exact::new(4) } else { c };
    let base_trainable = totals.base_trainable;
    let block_inputs_saved = base_trainable || !plan.adapters().is_empty();
    let masks = act.dropout_masks();
    let eager = act.attention == AttentionImpl::Eager;
    let gpt2 = model.family == Family::Gpt2;
    // Eager attention's softmax probabilities (fp32, plus their 16-bit cast under autocast).
    let probs = if eager {
        a * s * s * b * if autocast { 4 + c } else { Exact::new(4) }
    } else {
        Exact::ZERO
    };

    // One block.
    let (attn, mlp, norms, first_norm) = if gpt2 {
        let ln = resid * th + 8 * t;
        let (attn_in, mlp_in) = if block_inputs_saved {
            (cth, cth + cti)
        } else {
            (Exact::ZERO, Exact::ZERO)
        };
        let mlp = 4 * cti;
        let attn = if eager {
            4 * cth + probs
        } else {
            6 * cth + 4 * b * a * s
        };
        (attn + attn_in, mlp + mlp_in, 2 * ln, ln)
    } else {
        let normalized = if base_trainable {
            resid * th
        } else {
            Exact::ZERO
        };
        let rms = 4 * th + 4 * t + normalized;
        let (attn_casts, mlp_casts) = if autocast {
            let qkv = match model.attention {
                AttentionLayout::Separate => 3,
                AttentionLayout::FusedQkv => 1,
            };
            let up = match model.mlp {
                MlpLayout::Gated | MlpLayout::Experts { .. } => 2,
                MlpLayout::Plain | MlpLayout::FusedGated => 1,
            };
            (qkv, up)
        } else {
            (1, 1)
        };
        let (attn_in, mlp_in) = if block_inputs_saved {
            (attn_casts * cth, mlp_casts * cth + cti)
        } else {
            (Exact::ZERO, Exact::ZERO)
        };
        // Mixture of experts: every token runs through `top_k` gated experts (the router's
        // logits, `E` per token, are small and left out).
        let (mlp, mlp_in) = match model.mlp {
            MlpLayout::Plain => (2 * cti, mlp_in),
            MlpLayout::Gated | MlpLayout::FusedGated => (3 * cti, mlp_in),
            MlpLayout::Experts { top_k, .. } => {
                let k = Exact::from(top_k);
                (3 * cti * k, mlp_in * k)
            }
        };
        let attn = if eager {
            3 * c * t * a * dh + probs + cth
        } else {
            c * t * (2 * a * dh + 2 * kv * dh) + 4 * b * a * s
        };
        (attn + attn_in, mlp + mlp_in, 2 * rms, rms)
    };
    let mut attn_block = attn;
    // Measured: under autocast with sdpa, peft casts an adapted output projection's 16-bit input
    // up to the adapter's fp32 and autocast casts it back down, so lora_A saves a fresh copy
    // (`c T h`) instead of sharing the attention output's storage.
    if autocast && !eager && totals.adapts_attention_output {
        attn_block += cth;
    }
    let mut mlp_block = mlp;
    // Dropout, measured in `fixtures/memory/measured_memory_ckpt_dropout.json` with the GPU
    // kernels (`native_dropout`, whose backward keeps a 1-byte mask; fused sdpa, which keeps only
    // an RNG seed and offset). Full fine-tuning matches these terms to the byte.
    // Outside the blocks (GPT-2's embedding dropout), and LoRA's dropout (all layers).
    let mut dropout_outside_blocks = Exact::ZERO;
    let mut adapter_dropout = Exact::ZERO;
    if masks {
        // Residual dropout after the attention and the MLP: only GPT-2-style blocks (and Phi-3)
        // have it. Llama, Mistral, Qwen2, Gemma and Mixtral drop nothing in the residual stream:
        // measured 0 bytes with sdpa on llama and mistral, where the old `2 T h` per layer was
        // all error.
        if matches!(
            model.family,
            Family::Gpt2 | Family::Phi3 | Family::MiniGpt | Family::Custom
        ) {
            attn_block += th;
            mlp_block += th;
        }
        // Eager attention drops the probabilities: a 1-byte mask, and the matmul with V saves
        // the dropped probabilities instead of what it read before. Under autocast that was the
        // 16-bit cast, which is no longer saved (same size): `+1` byte per element. Without a
        // cast it was the softmax output itself, still saved for the softmax's backward: `+1+c`.
        // Measured on gpt2, llama, mistral: +5 B (fp32), +1 B (autocast) x b a s^2 per layer.
        if eager {
            attn_block += a * s * s * b * (1 + if autocast { Exact::ZERO } else { c });
        }
        // GPT-2 drops the embedding output (`T h` mask) when anything upstream needs its
        // gradient: a trained embedding, or checkpointing (transformers then makes the
        // embedding output require grad).
        if gpt2 && (base_trainable || act.checkpointing == Checkpointing::Full) {
            dropout_outside_blocks += th;
        }
        // peft's `lora_dropout` drops each adapted module's input on its own: a 1-byte mask
        // per module (none when the input needs no gradient: the first block's q, k, v with a
        // frozen embedding and no checkpointing), and lora_A saves its own dropped copy. Under
        // autocast lora_A saved its own 16-bit cast already, so only the mask is new. Without
        // autocast each copy (`c T in`) is new, and the undropped inputs that were saved only
        // for the adapters (frozen base) are saved by nobody now: the attention input, the MLP
        // inputs and, with eager attention, the merged attention output read by o_proj (sdpa
        // keeps its output for its own backward). Measured exactly for LoRA on gpt2, llama and
        // mistral (for instance llama fp32 sdpa: +4 fp32 `T h` copies and 7 masks per layer, less
        // the first block's 3).
        let first_block_input_frozen = !base_trainable && act.checkpointing == Checkpointing::None;
        for site in plan.adapters() {
            let m = &model.modules[site.module];
            let per_module = Exact::from(m.in_features) * t;
            let count = Exact::from(m.count);
            let mut masked = count;
            if first_block_input_frozen {
                masked = masked.saturating_sub(Exact::from(m.first_block_instances(d.layers)));
            }
            adapter_dropout += per_module * masked;
            if !autocast {
                adapter_dropout += c * per_module * count;
            }
        }
        if !autocast && !base_trainable && !plan.adapters().is_empty() {
            let adapted = |f: &dyn Fn(&crate::shape::LinearModule) -> bool| {
                plan.adapters()
                    .iter()
                    .any(|site| f(&model.modules[site.module]))
            };
            let mut unsaved = Exact::ZERO;
            if adapted(&|m| m.reads_attention_input) {
                unsaved += cth;
            }
            if adapted(&|m| m.group == ModuleGroup::Mlp) {
                unsaved += cth + cti;
            }
            if eager && adapted(&|m| m.group == ModuleGroup::Attention && !m.reads_attention_input)
            {
                unsaved += cth;
            }
            adapter_dropout = adapter_dropout.saturating_sub(unsaved * layers);
        }
    }
    let mut parts = Parts::default();
    match act.checkpointing {
        Checkpointing::None => {
            parts.attention = attn_block * layers;
            parts.mlp = mlp_block * layers;
            parts.norms = norms * layers;
        }
        // Assembled below, once the terms outside the blocks are known.
        Checkpointing::Full => {}
    }
    // The first norm's input is the embedding output: nothing upstream needs its gradient when
    // the embedding is frozen.
    if !base_trainable && act.checkpointing == Checkpointing::None {
        parts.norms = parts.norms.saturating_sub(first_norm);
    }
    // Final norm, lm_head input, loss.
    let final_norm = if gpt2 {
        resid * th + 8 * t
    } else {
        4 * th
            + 4 * t
            + if base_trainable {
                resid * th
            } else {
                Exact::ZERO
            }
    };
    parts.norms += final_norm;
    let lm_head_input = if base_trainable { cth } else { Exact::ZERO };
    parts.logits_loss = 4 * t * v + 8 * t + 4 + lm_head_input;
    if base_trainable {
        parts.embeddings = 8 * t + if gpt2 { 8 * s } else { Exact::ZERO };
    }
    if !gpt2 && matches!(model.positions, PositionKind::Rotary) {
        parts.attention += 2 * 4 * s * dh;
    }
    let [per_token, fixed] = totals.compute_terms.map(Exact::new);
    let [per_token_bytes, fixed_bytes] = totals.dense_term_bytes.map(Exact::new);
    parts.regime = (per_token * t + fixed) * c + per_token_bytes * t + fixed_bytes;
    parts.embeddings += dropout_outside_blocks;
    parts.regime += adapter_dropout;
    if act.checkpointing == Checkpointing::Full {
        // transformers' `gradient_checkpointing_enable()` (non-reentrant `torch.utils.checkpoint`
        // per decoder layer), measured as the peak over the whole step of the live saved bytes
        // (`fixtures/memory/measured_memory_ckpt_dropout.json`). Each checkpoint keeps its
        // block's input (`r T h`), and with eager attention its 4D float mask (`r b s^2`, bound
        // into every block's arguments). The backward recomputes the last block first, while
        // every checkpoint is still alive and the final norm's and the loss's tensors are
        // already freed: the step peaks either there (one block's saved tensors, sharing the
        // block input with the first norm when that norm saves the fp32 residual as it is) or
        // at the end of the forward (checkpoints, final norm, logits and loss), whichever is
        // larger: 133 of the 144 measured steps peak in the backward, mistral's 2048-token
        // vocabulary under autocast at the forward's end, and this picks the same moment on
        // every one (activations within 3.2% of the measured peak on all of them).
        let rope = parts.attention;
        let checkpoints = resid * th * layers
            + if eager {
                resid * b * s * s
            } else {
                Exact::ZERO
            };
        let shared_input = if gpt2 || resid == Exact::new(4) {
            resid * th
        } else {
            Exact::ZERO
        };
        // transformers turns the KV cache off under checkpointing; GPT-2's sdpa path saved the
        // cache's copies of k and v (`2 c T h` per layer; measured: the same non-checkpointed
        // step with `use_cache=False` saves exactly that much less).
        if gpt2 && !eager {
            attn_block = attn_block.saturating_sub(2 * cth);
        }
        // Regime terms per token are per layer: one layer's worth is recomputed. Their fixed
        // parts are weight-sized temporaries (DoRA's `eye(in)` weight-norm graph, GPT-2's
        // transposed weight) that live one module at a time: the peak holds the largest one
        // (measured on DoRA: the block's last, largest module, down_proj or c_proj, adds its
        // graph on top of the block while the recomputation runs).
        let layers_or_one = layers.max(Exact::new(1));
        // (Adapters' `x A` is per token only.)
        let per_token_terms = (per_token * c + per_token_bytes) * t;
        let largest_fixed = plan
            .activation_terms()
            .iter()
            .map(|term| {
                let bytes = match term.dtype {
                    ActivationDtype::Compute => c,
                    ActivationDtype::Dense(dt) => Exact::from(dt.bytes()),
                };
                Exact::from(term.fixed) * bytes
            })
            .max()
            .unwrap_or(Exact::ZERO);
        let block_regime = (per_token_terms + largest_fixed + adapter_dropout) / layers_or_one;
        let block = (attn_block + mlp_block + norms + block_regime).saturating_sub(shared_input);
        let tail = final_norm + parts.logits_loss;
        if block >= tail {
            parts.attention = rope + attn_block;
            parts.mlp = mlp_block;
            parts.norms = (norms + checkpoints).saturating_sub(shared_input);
            parts.logits_loss = Exact::ZERO;
            parts.regime = block_regime;
        } else {
            parts.attention = rope;
            parts.mlp = Exact::ZERO;
            parts.norms = checkpoints + final_norm;
            parts.regime = Exact::ZERO;
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemorySettings, Precision, Workload};
    use crate::shape::TransformerSpec;

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

    #[test]
    fn eager_pays_for_the_score_matrix_and_flash_matches_sdpa() {
        let model = TransformerSpec::minigpt().build().unwrap();
        let plan = full_plan(&model);
        let total = |a, c| {
            estimate_activations(&model, &plan, &settings(a, c))
                .unwrap()
                .total
        };
        let sdpa = total(AttentionImpl::Sdpa, Checkpointing::None);
        assert_eq!(sdpa, total(AttentionImpl::Flash, Checkpointing::None));
        // minigpt: 4 layers, 4 heads; eager saves fp32 probabilities and their bf16 cast
        // (6 bytes x heads x seq^2 x batch per layer) instead of sdpa's k, v, output and lse.
        assert!(
            total(AttentionImpl::Eager, Checkpointing::None) > sdpa + 4 * 4 * 512 * 512 * 2 * 5
        );
        assert!(total(AttentionImpl::Sdpa, Checkpointing::Full) < sdpa / 2);
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

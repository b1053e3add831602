//! The memory model: a [`TrainingPlan`] plus [`MemorySettings`] gives bytes in four buckets
//! (weights, gradients, optimizer state, activations) and the 16-bit weight copies autocast saves.
//!
//! Weights, gradients and optimizer state are exact integer sums over parameter groups; the
//! activation model lives in [`activations`].

pub mod activations;
pub mod exact;
pub mod overrides;
pub mod peak;
mod recompute;
pub mod reserved;

pub use activations::{
    ActivationBreakdown, ActivationModel, ActivationSettings, AttentionImpl, Checkpointing,
};
pub use overrides::SettingsOverrides;
pub use peak::{LiveBytes, LossKind, PeakEstimate, StepKind, StepPeak, StepPhase, StepSettings};
pub use reserved::{CudaOverhead, FitMargin, ReservedEstimate};

use crate::dtype::DType;
use crate::error::{CountError, SettingProblem, SettingsError, UnknownName};
use crate::plan::TrainingPlan;
use crate::shape::ModelShape;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How weights, gradients and activations are held during the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// The seed lab's mixed precision: fp16 weights + fp32 master copy, fp16 gradients.
    SeedMixed,
    /// PyTorch autocast to bf16: params, grads and optimizer state in fp32.
    AmpBf16,
    /// PyTorch autocast to fp16.
    AmpFp16,
    Fp32,
    /// Pure bf16: weights, grads and optimizer state in bf16.
    Bf16,
    /// Pure fp16.
    Fp16,
}

impl Precision {
    pub const ALL: [Precision; 6] = [
        Precision::SeedMixed,
        Precision::AmpBf16,
        Precision::AmpFp16,
        Precision::Fp32,
        Precision::Bf16,
        Precision::Fp16,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Precision::SeedMixed => "seed-mixed",
            Precision::AmpBf16 => "amp-bf16",
            Precision::AmpFp16 => "amp-fp16",
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }

    /// The dtype matmuls run in and activations are saved in.
    pub const fn compute_dtype(self) -> DType {
        // Indexed by the variant (read on every estimate: a load, not a branch).
        const COMPUTE: [DType; 6] = [
            DType::F16,  // SeedMixed
            DType::BF16, // AmpBf16
            DType::F16,  // AmpFp16
            DType::F32,  // Fp32
            DType::BF16, // Bf16
            DType::F16,  // Fp16
        ];
        COMPUTE[self as usize]
    }

    /// The dtype trainable parameters are stored in (the working copy).
    pub const fn trainable_dtype(self) -> DType {
        const TRAINABLE: [DType; 6] = [
            DType::F16,  // SeedMixed
            DType::F32,  // AmpBf16
            DType::F32,  // AmpFp16
            DType::F32,  // Fp32
            DType::BF16, // Bf16
            DType::F16,  // Fp16
        ];
        TRAINABLE[self as usize]
    }

    /// The fp32 master copy kept beside 16-bit trainable weights, if any.
    pub const fn master_dtype(self) -> Option<DType> {
        match self {
            Precision::SeedMixed => Some(DType::F32),
            _ => None,
        }
    }

    pub const fn gradient_dtype(self) -> DType {
        self.trainable_dtype()
    }

    /// The dtype of the optimizer's per-parameter state for 32-bit optimizers: the master copy's
    /// when there is one, else the parameter's (`torch.zeros_like(p)`).
    pub const fn optimizer_state_dtype(self) -> DType {
        const STATE: [DType; 6] = [
            DType::F32,  // SeedMixed: its master copy's
            DType::F32,  // AmpBf16
            DType::F32,  // AmpFp16
            DType::F32,  // Fp32
            DType::BF16, // Bf16
            DType::F16,  // Fp16
        ];
        STATE[self as usize]
    }

    /// Frozen parameters' dtype when `--base-dtype` is not given.
    pub const fn default_frozen_dtype(self) -> DType {
        self.trainable_dtype()
    }

    /// True under autocast: matmuls cast fp32 weights to 16 bits and save the copies.
    pub const fn autocast(self) -> bool {
        // AmpBf16 and AmpFp16 are variants 1 and 2.
        (self as u8).wrapping_sub(1) < 2
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownName {
                what: "precision",
                value: s.to_string(),
                expected: format!("one of: {}", Precision::ALL.map(Precision::name).join(", ")),
            })
    }
}

/// The optimizer and the state it keeps per trainable tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// `torch.optim.AdamW` (the foreach implementation, PyTorch's default on GPUs):
    /// `exp_avg` and `exp_avg_sq` in the state dtype, plus a 4-byte fp32 `step` tensor per
    /// parameter tensor; its step holds one state-dtype temporary per parameter
    /// (`torch._foreach_sqrt(exp_avg_sqs)`).
    AdamW,
    /// `torch.optim.AdamW(fused=True)` (the Hugging Face Trainer's default `adamw_torch_fused`
    /// since transformers 4.5x with torch >= 2.8, axolotl's default): the same state, updated in
    /// place by one kernel, so the step allocates no temporaries (measured with `MemTracker`).
    AdamWFused,
    /// bitsandbytes `AdamW8bit`: two uint8 states and two fp32 absmax per 256-element block;
    /// tensors under 4,096 elements keep 32-bit states.
    AdamW8bit,
    /// SGD with momentum: one buffer per parameter.
    SgdMomentum,
    /// Plain SGD: no state.
    Sgd,
}

impl Optimizer {
    pub const ALL: [Optimizer; 5] = [
        Optimizer::AdamW,
        Optimizer::AdamWFused,
        Optimizer::AdamW8bit,
        Optimizer::SgdMomentum,
        Optimizer::Sgd,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Optimizer::AdamW => "adamw",
            Optimizer::AdamWFused => "adamw-fused",
            Optimizer::AdamW8bit => "adamw-8bit",
            Optimizer::SgdMomentum => "sgd-momentum",
            Optimizer::Sgd => "sgd",
        }
    }

    /// State bytes for one trainable tensor of `numel` elements (step counters excluded).
    pub fn state_bytes(self, numel: u64, state_dtype: DType) -> u128 {
        let n = u128::from(numel);
        match self {
            Optimizer::AdamW | Optimizer::AdamWFused => 2 * n * u128::from(state_dtype.bytes()),
            Optimizer::AdamW8bit => {
                if numel < 4096 {
                    2 * n * 4
                } else {
                    2 * n + 2 * 4 * n.div_ceil(256)
                }
            }
            Optimizer::SgdMomentum => n * u128::from(state_dtype.bytes()),
            Optimizer::Sgd => 0,
        }
    }

    /// Bytes of the `step` counter kept per trainable tensor.
    pub const fn step_bytes_per_tensor(self) -> u64 {
        match self {
            Optimizer::AdamW | Optimizer::AdamWFused => 4,
            Optimizer::AdamW8bit | Optimizer::SgdMomentum | Optimizer::Sgd => 0,
        }
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Optimizer {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Optimizer::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| UnknownName {
                what: "optimizer",
                value: s.to_string(),
                expected: format!("one of: {}", Optimizer::ALL.map(Optimizer::name).join(", ")),
            })
    }
}

/// The micro-batch one GPU processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub batch: u64,
    pub seq: u64,
}

/// Data-parallel sharding: DeepSpeed ZeRO stage (FSDP's FULL_SHARD is stage 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sharding {
    pub gpus: u64,
    pub zero_stage: u8,
}

impl Default for Sharding {
    fn default() -> Self {
        Sharding {
            gpus: 1,
            zero_stage: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySettings {
    pub precision: Precision,
    /// Frozen parameters' dtype; `None` follows the precision.
    pub base_dtype: Option<DType>,
    pub optimizer: Optimizer,
    /// Count the optimizer's `step` tensors (PyTorch keeps one per parameter tensor).
    pub step_counters: bool,
    pub activations: ActivationSettings,
    pub workload: Workload,
    pub sharding: Sharding,
    /// Gradient accumulation: changes the step's peak ([`peak`]), not the buckets.
    pub step: StepSettings,
}

impl MemorySettings {
    /// The seed lab's conventions: fp16 mixed precision with fp32 master, Adam without step
    /// counters, the rough activation rule, batch 16, seq 32.
    pub fn seed() -> Self {
        MemorySettings {
            precision: Precision::SeedMixed,
            base_dtype: None,
            optimizer: Optimizer::AdamW,
            step_counters: false,
            activations: ActivationSettings::seed(),
            workload: Workload { batch: 16, seq: 32 },
            sharding: Sharding::default(),
            step: StepSettings::default(),
        }
    }

    /// One PyTorch training step as most fine-tuning scripts run it: bf16 autocast (fp32
    /// trainable weights, gradients and AdamW state, with `step` counters), the frozen base
    /// loaded in bf16 (`torch_dtype=torch.bfloat16`), sdpa attention, the per-operation
    /// activation model, no dropout, batch 1, seq 2048.
    pub fn pytorch() -> Self {
        MemorySettings {
            precision: Precision::AmpBf16,
            base_dtype: Some(DType::BF16),
            optimizer: Optimizer::AdamW,
            step_counters: true,
            activations: ActivationSettings {
                model: ActivationModel::Model,
                attention: AttentionImpl::Sdpa,
                checkpointing: Checkpointing::None,
                dropout: None,
            },
            workload: Workload {
                batch: 1,
                seq: 2048,
            },
            sharding: Sharding::default(),
            step: StepSettings::default(),
        }
    }

    /// The largest micro-batch accepted: far above any real workload, low enough that every
    /// byte count stays exact.
    pub const MAX_BATCH: u64 = 1 << 24;
    /// The largest sequence length accepted.
    pub const MAX_SEQ: u64 = 1 << 24;
    /// The largest data-parallel group accepted.
    pub const MAX_GPUS: u64 = 1 << 20;

    /// Check every setting a user gives as a number: batch, seq and gpus from 1 to their maximum,
    /// dropout in `[0, 1)`, ZeRO stage 0 to 3. The CLI and the experiment configs both call this,
    /// so both accept the same values; the error names the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let out_of_range = |setting: &'static str, value: u64, max: u64| {
            (value == 0 || value > max).then_some(SettingsError {
                setting,
                problem: SettingProblem::OutOfRange { value, max },
            })
        };
        let ranges = [
            ("batch", self.workload.batch, Self::MAX_BATCH),
            ("seq", self.workload.seq, Self::MAX_SEQ),
            ("gpus", self.sharding.gpus, Self::MAX_GPUS),
            (
                "grad-accum",
                self.step.grad_accum,
                StepSettings::MAX_GRAD_ACCUM,
            ),
        ];
        if let Some(err) = ranges
            .into_iter()
            .find_map(|(setting, value, max)| out_of_range(setting, value, max))
        {
            return Err(err);
        }
        if let Some(p) = self.activations.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(SettingsError {
                setting: "dropout",
                problem: SettingProblem::NotAProbability { value: p },
            });
        }
        // Gradients applied inside the backward cannot accumulate over micro-batches.
        if self.step.optimizer_in_backward && self.step.grad_accum > 1 {
            return Err(SettingsError {
                setting: "optimizer-in-backward",
                problem: SettingProblem::Incompatible {
                    other: "--grad-accum above 1",
                },
            });
        }
        if self.sharding.zero_stage > 3 {
            return Err(SettingsError {
                setting: "zero",
                problem: SettingProblem::NotAZeroStage {
                    value: self.sharding.zero_stage,
                },
            });
        }
        Ok(())
    }

    pub fn frozen_dtype(&self) -> DType {
        self.base_dtype
            .unwrap_or(self.precision.default_frozen_dtype())
    }

    /// The dtype of the frozen base's dense parameters under `plan`'s totals: the one its
    /// embedding is stored in when the plan fixes it (QLoRA's `prepare_model_for_kbit_training`:
    /// fp32), else [`MemorySettings::frozen_dtype`].
    #[inline]
    pub fn frozen_base_dtype(&self, totals: &crate::plan::PlanTotals) -> DType {
        match totals.embedding_dtype {
            Some(dtype) => dtype,
            None => self.frozen_dtype(),
        }
    }

    /// The dtype the base's weights (the output head's among them) are held in under `plan`'s
    /// totals: the trainable dtype when the base trains, else [`Self::frozen_base_dtype`].
    #[inline]
    pub fn base_weights_dtype(&self, totals: &crate::plan::PlanTotals) -> DType {
        if totals.base_trainable {
            self.precision.trainable_dtype()
        } else {
            self.frozen_base_dtype(totals)
        }
    }
}

/// The finer split behind the four buckets, per GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryDetail {
    /// Working copies of every parameter (trainable and frozen, quantized included).
    pub model_weights: u64,
    /// fp32 master copies of trainable parameters (mixed precision only).
    pub master_weights: u64,
    /// Optimizer moments / momentum buffers.
    pub optimizer_states: u64,
    /// Optimizer `step` tensors.
    pub step_counters: u64,
    /// Activation bytes by component.
    pub activations: ActivationBreakdown,
}

/// Bytes per bucket. `weights` includes the master copy; `total` = the four buckets +
/// `weight_casts`. All figures are per GPU; `total_all_gpus` sums over the data-parallel group.
/// `peak` is the most bytes alive at one moment of the step ([`peak`]), which decides whether
/// the step fits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub weight_casts: u64,
    pub total: u64,
    pub gpus: u64,
    pub total_all_gpus: u64,
    pub detail: MemoryDetail,
    pub peak: PeakEstimate,
}

fn to_u64(what: &'static str, v: u128) -> Result<u64, CountError> {
    u64::try_from(v).map_err(|_| CountError { what })
}

/// Estimate the memory of one training step of `plan` on `model`.
pub fn estimate_memory(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<MemoryEstimate, CountError> {
    let precision = settings.precision;
    // The plan keeps running sums (`PlanTotals`): every bucket but 8-bit optimizer state is
    // (elements or tensors) x (bytes per element), so bytes per element apply once, exactly.
    let totals = plan.totals();
    if totals.overflow {
        return Err(CountError {
            what: "parameter counts",
        });
    }
    let trainable_elements = u128::from(totals.trainable_params);
    let model_weights = u128::from(totals.fixed_storage_bytes)
        + u128::from(
            totals
                .trainable_params
                .saturating_sub(totals.trainable_fixed_elements),
        ) * u128::from(precision.trainable_dtype().bytes())
        + u128::from(
            totals
                .frozen_params
                .saturating_sub(totals.frozen_fixed_elements),
        ) * u128::from(settings.frozen_dtype().bytes());
    let master = precision
        .master_dtype()
        .map_or(0, |m| trainable_elements * u128::from(m.bytes()));
    let grads = trainable_elements * u128::from(precision.gradient_dtype().bytes());
    let state_dtype = precision.optimizer_state_dtype();
    let states = if settings.optimizer == Optimizer::AdamW8bit {
        // Per tensor: small tensors keep 32-bit state, large ones block-wise 8-bit.
        plan.groups(model)
            .filter(|g| g.trainable)
            .map(|g| u128::from(g.count) * settings.optimizer.state_bytes(g.numel, state_dtype))
            .sum()
    } else {
        // Linear in the element count for every other optimizer: state_bytes(1) per element.
        trainable_elements * settings.optimizer.state_bytes(1, state_dtype)
    };
    let steps = if settings.step_counters {
        u128::from(totals.trainable_tensors)
            * u128::from(settings.optimizer.step_bytes_per_tensor())
    } else {
        0
    };
    let acts = activations::estimate_activations(model, plan, settings)?;

    let sharding = settings.sharding;
    let gpus = u128::from(sharding.gpus.max(1));
    let shard = |bytes: u128, from_stage: u8| {
        if sharding.zero_stage >= from_stage {
            bytes.div_ceil(gpus)
        } else {
            bytes
        }
    };
    let model_weights = shard(model_weights, 3);
    let master = shard(master, 1);
    let states = shard(states, 1);
    let steps = shard(steps, 1);
    let grads = shard(grads, 2);

    let weights = model_weights + master;
    let optimizer = states + steps;
    let activations = u128::from(acts.total);
    let casts = u128::from(acts.weight_casts);
    let total = weights + grads + optimizer + activations + casts;
    // Every figure below is at most `total`, and `total` at most the total over all GPUs: once
    // those two fit in u64, the rest do.
    let total_all_gpus = total.checked_mul(gpus);
    let total = to_u64("total bytes", total)?;
    let total_all_gpus = total_all_gpus
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or(CountError {
            what: "total bytes over all GPUs",
        })?;
    let narrow = |bytes: u128| bytes as u64;
    let step = step_inputs(model, plan, settings, &acts, [weights, grads, optimizer])?;
    Ok(MemoryEstimate {
        weights: narrow(weights),
        gradients: narrow(grads),
        optimizer: narrow(optimizer),
        activations: narrow(activations),
        weight_casts: narrow(casts),
        total,
        gpus: sharding.gpus.max(1),
        total_all_gpus,
        detail: MemoryDetail {
            model_weights: narrow(model_weights),
            master_weights: narrow(master),
            optimizer_states: narrow(states),
            step_counters: narrow(steps),
            activations: acts.breakdown,
        },
        peak: peak::peak(&step),
    })
}

/// The peak of the first and of a steady-state step of `plan` on `model`, each with its
/// categories (off the hot path: [`estimate_memory`] keeps the larger one's).
pub fn step_peaks(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<[StepPeak; 2], CountError> {
    Ok(peak::step_peaks(&timeline_inputs(model, plan, settings)?))
}

/// The step's timeline inputs for `plan` on `model` ([`peak::timeline`] draws the moments from
/// them): the memory model evaluated again, off the hot path, for charts and reports.
pub fn timeline_inputs(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<peak::StepInputs, CountError> {
    let estimate = estimate_memory(model, plan, settings)?;
    let acts = activations::estimate_activations(model, plan, settings)?;
    let buckets = [estimate.weights, estimate.gradients, estimate.optimizer].map(u128::from);
    step_inputs(model, plan, settings, &acts, buckets)
}

/// The timeline's inputs ([`peak::StepInputs`]) from the buckets (`[weights, gradients,
/// optimizer]`, per GPU, sharded) and the activation model's parts. Checks once that the largest
/// sum a moment can reach fits in `u64`, so the timeline's additions cannot overflow.
#[inline]
fn step_inputs(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    acts: &activations::ActivationResult,
    [weights, grads, optimizer]: [u128; 3],
) -> Result<peak::StepInputs, CountError> {
    let totals = plan.totals();
    let precision = settings.precision;
    let tokens = u128::from(settings.workload.batch)
        * (u128::from(settings.workload.seq) + u128::from(totals.extra_tokens));
    let modelled = settings.activations.model == ActivationModel::Model;
    let logits = if modelled {
        tokens * u128::from(model.dims.vocab)
    } else {
        0
    };
    let sharded_state = |bytes: u128| {
        if settings.sharding.zero_stage >= 1 {
            bytes.div_ceil(u128::from(settings.sharding.gpus.max(1)))
        } else {
            bytes
        }
    };
    let optimizer_temporaries = match settings.optimizer {
        Optimizer::AdamW => sharded_state(
            u128::from(totals.trainable_params)
                * u128::from(precision.optimizer_state_dtype().bytes()),
        ),
        Optimizer::AdamWFused | Optimizer::AdamW8bit | Optimizer::SgdMomentum | Optimizer::Sgd => 0,
    };
    let hidden = u128::from(model.dims.hidden);
    let head_gradients = if totals.base_trainable {
        u128::from(model.dims.vocab) * hidden * u128::from(precision.gradient_dtype().bytes())
    } else {
        0
    };
    // Which block's recomputation peaks ([`recompute::recompute_moment`]).
    let recompute = if acts.at_recompute > 0 {
        recompute::recompute_moment(model, plan, settings, acts)
    } else {
        recompute::RecomputeMoment {
            gradients: head_gradients,
            ..Default::default()
        }
    };
    let (recompute_gradients, activations_at_recompute, recompute_temporaries) =
        (recompute.gradients, recompute.saved, recompute.in_flight);
    // With checkpointing the blocks' casts are made again when each block is recomputed: the
    // backward starts with the lm_head's cast alone (its weight read in the compute dtype), and
    // a block's recomputation holds its own.
    let casts = u128::from(acts.weight_casts);
    let (casts_at_start, casts_at_recompute) = if acts.at_recompute > 0 {
        let (_, head_cast) = head_saves(model, plan, settings, tokens, casts);
        (head_cast, recompute.casts)
    } else {
        (casts, 0)
    };
    // The regime's fixed activation terms freed during the forward (DoRA's weight-norm graph,
    // bitsandbytes' dequantized weight): the held-everything bucket counts them, the backward
    // does not start with them. Saved ones (weight-sized deltas, a prefix cache) stay.
    let fixed_terms = u128::from(totals.forward_temporaries[0])
        * u128::from(precision.compute_dtype().bytes())
        + u128::from(totals.forward_temporaries[1]);
    let at_backward_start = if acts.at_recompute > 0 || !modelled {
        u128::from(acts.at_backward_start)
    } else {
        u128::from(acts.at_backward_start).saturating_sub(fixed_terms)
    };
    let inputs = 8 * tokens;
    // transformers' loss runs inside the model's forward, its output alive; torchtune's chunked
    // loss, Liger's fused one and torchtune's offloading take the final hidden states from a
    // model that keeps no cache (those losses count the states where they keep them).
    let output_held = if settings.step.loss == LossKind::Full && !settings.step.activation_offload {
        u128::from(acts.output_held)
    } else {
        0
    };
    let activations = u128::from(acts.at_backward_start.max(acts.at_recompute));
    let loss_saved = if modelled {
        4 * logits + 8 * tokens + 4
    } else {
        0
    };
    // Every moment is at most this sum (the fused loss's terms added below; the recompute
    // moment's gradients are at least the head's).
    let mut bound = weights
        + grads
        + 2 * optimizer
        + optimizer_temporaries
        + activations
        + u128::from(acts.weight_casts)
        + 12 * logits
        + recompute_gradients
        + recompute_temporaries
        + inputs
        + output_held;
    let fused_loss = if modelled && settings.step.loss == LossKind::Fused {
        let f = fused_loss_bytes(model, plan, settings, acts, tokens)?;
        bound += u128::from(f.hidden_gradient)
            + u128::from(f.head_gradient)
            + u128::from(f.transient)
            + u128::from(f.last_block_in_flight)
            + u128::from(f.forward_in_flight);
        f
    } else {
        peak::FusedLossBytes::default()
    };
    if u64::try_from(bound).is_err() {
        return Err(CountError { what: "peak bytes" });
    }
    let narrow = |bytes: u128| bytes as u64;
    let offload = if settings.step.activation_offload {
        let offloadable = peak::saved_outside_loss(
            narrow(at_backward_start),
            narrow(casts_at_start),
            narrow(loss_saved),
        );
        Some(offload_bytes(
            model,
            plan,
            settings,
            acts,
            tokens,
            offloadable,
        )?)
    } else {
        None
    };
    Ok(peak::StepInputs {
        parameters: narrow(weights),
        gradients: narrow(grads),
        optimizer_state: narrow(optimizer),
        optimizer_temporaries: narrow(optimizer_temporaries),
        activations_at_backward_start: narrow(at_backward_start),
        activations_at_recompute: narrow(activations_at_recompute),
        weight_casts_at_backward_start: narrow(casts_at_start),
        weight_casts_at_recompute: narrow(casts_at_recompute),
        logits: narrow(logits),
        logit_bytes: precision.compute_dtype().bytes(),
        loss_saved: narrow(loss_saved),
        head_gradients: narrow(recompute_gradients),
        recompute_temporaries: narrow(recompute_temporaries),
        inputs: narrow(inputs),
        output_held: narrow(output_held),
        grad_accum: settings.step.grad_accum,
        loss: settings.step.loss,
        fused_loss,
        chunked_head_backward: if modelled && settings.step.loss == LossKind::Chunked {
            chunked_head_bytes(model, plan, settings, tokens)?
        } else {
            0
        },
        optimizer_in_backward: if settings.step.optimizer_in_backward {
            Some(largest_trainable(model, plan, settings))
        } else {
            None
        },
        offload,
    })
}

/// The output head's saved tensors for `tokens` rows: its input (a trained head keeps it for its
/// weight's gradient) and autocast's 16-bit copy of its weight (at most `weight_casts`).
fn head_saves(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    tokens: u128,
    weight_casts: u128,
) -> (u128, u128) {
    let precision = settings.precision;
    let compute = precision.compute_dtype();
    let totals = plan.totals();
    let head_trained = totals.base_trainable;
    let head_dtype = settings.base_weights_dtype(totals);
    let hidden = u128::from(model.dims.hidden);
    let input = if head_trained {
        u128::from(compute.bytes()) * tokens * hidden
    } else {
        0
    };
    let cast = if precision.autocast() && head_dtype != compute {
        (u128::from(compute.bytes()) * u128::from(model.dims.vocab) * hidden).min(weight_casts)
    } else {
        0
    };
    (input, cast)
}

/// What torchtune's activation offloading keeps on the GPU and copies to the host
/// ([`peak::OffloadBytes`]), from the saved bytes outside the loss (`offloadable`). With
/// checkpointing (torchtune requires it) the tensors saved in the forward are the checkpoints
/// (each block's input), the final norm's and the embedding's indices, counted one by one
/// (exact on the measured steps, tensors under 1024 bytes aside). Without it every saved storage
/// is counted once and what the blocks save more than once is added
/// ([`activations::SavesOneByOne`]).
/// Measured in `fixtures/memory/measured_peak_techniques.json` (`activation-offload`). Off the
/// default path.
#[cold]
fn offload_bytes(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    acts: &activations::ActivationResult,
    tokens: u128,
    offloadable: u64,
) -> Result<peak::OffloadBytes, CountError> {
    if settings.activations.model != ActivationModel::Model {
        // A rough activation figure: all of it on the host.
        return Ok(peak::OffloadBytes {
            host: offloadable,
            ..peak::OffloadBytes::default()
        });
    }
    let offloadable = u128::from(offloadable);
    let (head_input, head_cast) =
        head_saves(model, plan, settings, tokens, u128::from(acts.weight_casts));
    let norms = activations::saves_one_by_one(model, plan, settings)?;
    let final_norm = u128::from(norms.final_norm);
    let layers = u128::from(model.dims.layers);
    let checkpoint = u128::from(acts.checkpoint);
    let host = if acts.at_recompute > 0 {
        let indices = if plan.totals().base_trainable {
            8 * tokens
        } else {
            0
        };
        layers * checkpoint + u128::from(norms.final_norm_each) + indices
    } else {
        offloadable.saturating_sub(head_input + head_cast) + u128::from(norms.final_norm_each)
            - final_norm
            + u128::from(norms.block_repeats)
    };
    let narrow = |bytes: u128| {
        u64::try_from(bytes).map_err(|_| CountError {
            what: "offloaded bytes",
        })
    };
    Ok(peak::OffloadBytes {
        kept_on_gpu: narrow(head_input + head_cast + final_norm)?,
        host: narrow(host)?,
        at_recompute_on_host: narrow(layers.saturating_sub(1) * checkpoint)?,
    })
}

/// The chunked loss's largest moment in the head's backward ([`peak::chunked_head_backward`]) for
/// `tokens` rows: every logit's gradient in the compute dtype, the head's weight gradient as its
/// matmul makes it (a trained head) and a chunk's hidden-state gradient in the residual's dtype.
/// Off the default path.
#[cold]
fn chunked_head_bytes(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    tokens: u128,
) -> Result<u64, CountError> {
    let precision = settings.precision;
    let compute = u128::from(precision.compute_dtype().bytes());
    let resid = if precision.autocast() { 4 } else { compute };
    let (hidden, vocab) = (u128::from(model.dims.hidden), u128::from(model.dims.vocab));
    let weight = if plan.totals().base_trainable {
        vocab * hidden * compute
    } else {
        0
    };
    let hidden_chunk = resid * tokens.div_ceil(u128::from(LossKind::CHUNKS)) * hidden;
    let logit_gradients = compute * tokens * vocab;
    let narrow = |bytes: u128| {
        u64::try_from(bytes).map_err(|_| CountError {
            what: "chunked loss bytes",
        })
    };
    // The largest moment is at most all three summed, three weight gradients and two chunks.
    narrow(logit_gradients + 3 * weight + 2 * hidden_chunk)?;
    Ok(peak::chunked_head_backward(
        narrow(logit_gradients)?,
        narrow(weight)?,
        narrow(hidden_chunk)?,
    ))
}

/// What Liger's fused linear cross-entropy holds ([`peak::FusedLossBytes`]) for `tokens` rows,
/// measured in `fixtures/memory/measured_peak_techniques.json` (`loss-fused`). Off the default
/// path.
#[cold]
fn fused_loss_bytes(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    acts: &activations::ActivationResult,
    tokens: u128,
) -> Result<peak::FusedLossBytes, CountError> {
    let precision = settings.precision;
    let compute = u128::from(precision.compute_dtype().bytes());
    // The final hidden states (and so their gradient) are in the residual stream's dtype: fp32
    // under autocast.
    let resid = if precision.autocast() { 4 } else { compute };
    let (hidden, vocab) = (u128::from(model.dims.hidden), u128::from(model.dims.vocab));
    let head_trained = plan.totals().base_trainable;
    let head_dtype = settings.base_weights_dtype(plan.totals());
    let head = vocab * hidden;
    let head_bytes = u128::from(head_dtype.bytes());
    // Liger's chunk: next_power_of_2(ceil(T / ceil(V / h))) rows.
    let rows_per_chunk = tokens
        .div_ceil(vocab.div_ceil(hidden.max(1)).max(1))
        .next_power_of_two()
        .min(tokens);
    let weight_gradient_product = if !head_trained {
        0
    } else if precision.autocast() && head_dtype == DType::F32 {
        // torch.addmm(grad_weight, ..., out_dtype=torch.float32, out=grad_weight) on CUDA: the
        // chunk's input cast to the compute dtype.
        compute * rows_per_chunk * hidden
    } else if head_bytes == compute {
        compute * head
    } else {
        // torch.mm in the compute dtype, then `.float()`.
        (compute + 4) * head
    };
    let (head_input, head_cast) =
        head_saves(model, plan, settings, tokens, u128::from(acts.weight_casts));
    // `x @ weight.t()` casts the transposed view afresh (autocast caches only a leaf's copy):
    // beside a trained head's cached copy, a second one while that matmul runs.
    let transposed_cast = if head_trained { head_cast } else { 0 };
    let transient = resid * tokens * hidden
        + compute * rows_per_chunk * vocab
        + weight_gradient_product
            .max(compute * rows_per_chunk * hidden)
            .max(transposed_cast)
        + 4 * tokens
        + 8 * tokens;
    let head_gradient = if head_trained { head_bytes * head } else { 0 };
    // Without checkpointing: the last block's MLP backward (a dense MLP's `d(down input)` and
    // its two branches' gradients, `3 c T i`, beside the residual's).
    let (final_norm, last_block_freed, last_block_in_flight, forward_in_flight) =
        if acts.at_recompute == 0 {
            let intermediate = compute * tokens * u128::from(model.dims.intermediate);
            let final_norm =
                u128::from(activations::saves_one_by_one(model, plan, settings)?.final_norm);
            (
                final_norm,
                final_norm + intermediate,
                3 * intermediate + resid * tokens * hidden,
                u128::from(activations::forward_in_flight(model, plan, settings)?),
            )
        } else {
            (0, 0, 0, 0)
        };
    let narrow = |bytes: u128| {
        u64::try_from(bytes).map_err(|_| CountError {
            what: "fused loss bytes",
        })
    };
    Ok(peak::FusedLossBytes {
        hidden_gradient: narrow(resid * tokens * hidden)?,
        head_gradient: narrow(head_gradient)?,
        transient: narrow(transient)?,
        head_input: narrow(head_input)?,
        head_cast: narrow(head_cast)?,
        last_block_freed: narrow(last_block_freed)?,
        last_block_in_flight: narrow(last_block_in_flight)?,
        final_norm: narrow(final_norm)?,
        forward_in_flight: narrow(forward_in_flight)?,
        // A tied head's gradient is summed with the embedding's into a new `.grad`.
        head_gradient_becomes_grad: !model.tied_embeddings,
    })
}

/// The largest trainable tensor's gradient bytes and AdamW temporary bytes, for the optimizer in
/// the backward (a walk over the plan's groups, off the default path).
#[cold]
fn largest_trainable(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> (u64, u64) {
    let largest = plan
        .groups(model)
        .filter(|g| g.trainable)
        .map(|g| g.numel)
        .max()
        .unwrap_or(0);
    let precision = settings.precision;
    let temporary = match settings.optimizer {
        Optimizer::AdamW => largest.saturating_mul(precision.optimizer_state_dtype().bytes()),
        Optimizer::AdamWFused | Optimizer::AdamW8bit | Optimizer::SgdMomentum | Optimizer::Sgd => 0,
    };
    (
        largest.saturating_mul(precision.gradient_dtype().bytes()),
        temporary,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each policy's table row says what the policy is (PyTorch's mixed precision keeps fp32
    /// parameters and autocasts matmuls; pure 16-bit keeps everything in 16 bits; the seed's
    /// mixed precision keeps fp16 weights beside an fp32 master copy).
    #[test]
    fn precision_rows_follow_the_policies() {
        use DType::{BF16, F16, F32};
        let expected = [
            (Precision::SeedMixed, F16, F16, Some(F32), F32, false),
            (Precision::AmpBf16, BF16, F32, None, F32, true),
            (Precision::AmpFp16, F16, F32, None, F32, true),
            (Precision::Fp32, F32, F32, None, F32, false),
            (Precision::Bf16, BF16, BF16, None, BF16, false),
            (Precision::Fp16, F16, F16, None, F16, false),
        ];
        for (p, compute, trainable, master, state, autocast) in expected {
            assert_eq!(
                (
                    p.compute_dtype(),
                    p.trainable_dtype(),
                    p.master_dtype(),
                    p.optimizer_state_dtype(),
                    p.autocast()
                ),
                (compute, trainable, master, state, autocast),
                "{p}"
            );
        }
    }

    #[test]
    fn validate_names_the_setting_and_its_limit() {
        assert_eq!(MemorySettings::seed().validate(), Ok(()));
        assert_eq!(MemorySettings::pytorch().validate(), Ok(()));
        let mut s = MemorySettings::pytorch();
        s.workload.batch = 0;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--batch: 0 is out of range (1 to 16777216)"
        );
        let mut s = MemorySettings::pytorch();
        s.workload.seq = (1 << 24) + 1;
        assert_eq!(
            s.validate().unwrap_err(),
            SettingsError {
                setting: "seq",
                problem: SettingProblem::OutOfRange {
                    value: 16_777_217,
                    max: 16_777_216
                }
            }
        );
        let mut s = MemorySettings::pytorch();
        s.sharding.gpus = (1 << 20) + 1;
        assert_eq!(s.validate().unwrap_err().setting, "gpus");
        let mut s = MemorySettings::pytorch();
        s.activations.dropout = Some(1.0);
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--dropout: 1 is not a probability in [0, 1)"
        );
        s.activations.dropout = Some(f64::NAN);
        assert_eq!(s.validate().unwrap_err().setting, "dropout");
        s.activations.dropout = Some(0.0);
        assert_eq!(s.validate(), Ok(()));
        s.sharding.zero_stage = 4;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--zero: 4 is not a ZeRO stage (0, 1, 2 or 3)"
        );
    }

    /// A regime's fixed activation term saved for the backward (a weight-sized delta) is alive
    /// when the backward starts; one freed in the forward (DoRA's weight-norm graph) is not. Both
    /// count in the activation bucket. bf16 autocast: 1,000 elements are 2,000 bytes.
    #[test]
    fn only_forward_temporaries_leave_before_the_backward() {
        use crate::plan::{ActivationDtype, ActivationTerm};
        let model = crate::spec::TransformerSpec::minigpt().build().unwrap();
        let settings = MemorySettings::pytorch();
        let with_term = |freed_in_forward| {
            let mut plan = TrainingPlan::default();
            plan.set_base(
                &model,
                crate::plan::BaseTreatment {
                    training: crate::plan::BaseTraining::Frozen,
                    block_linear_storage: crate::plan::Storage::Policy,
                    other_storage: crate::plan::Storage::Policy,
                },
            );
            if let Some(freed_in_forward) = freed_in_forward {
                plan.push_activation_term(ActivationTerm {
                    name: "delta",
                    module: None,
                    per_token: 0,
                    fixed: 1_000,
                    dtype: ActivationDtype::Compute,
                    freed_in_forward,
                });
            }
            let inputs = timeline_inputs(&model, &plan, &settings).unwrap();
            let estimate = estimate_memory(&model, &plan, &settings).unwrap();
            (inputs.activations_at_backward_start, estimate.activations)
        };
        let (start, bucket) = with_term(None);
        assert_eq!(with_term(Some(false)), (start + 2_000, bucket + 2_000));
        assert_eq!(with_term(Some(true)), (start, bucket + 2_000));
    }

    #[test]
    fn optimizer_in_backward_refuses_accumulation() {
        let mut s = MemorySettings::pytorch();
        s.step.optimizer_in_backward = true;
        assert_eq!(s.validate(), Ok(()));
        s.step.grad_accum = 2;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--optimizer-in-backward: cannot be combined with --grad-accum above 1"
        );
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        let err = "fp8".parse::<Precision>().unwrap_err();
        assert_eq!(err.what, "precision");
        assert_eq!(
            err.to_string(),
            "unknown precision `fp8` (expected one of: seed-mixed, amp-bf16, amp-fp16, fp32, bf16, fp16)"
        );
        assert_eq!(
            "adam".parse::<Optimizer>().unwrap_err().to_string(),
            "unknown optimizer `adam` (expected one of: adamw, adamw-fused, adamw-8bit, sgd-momentum, sgd)"
        );
        assert_eq!(
            "fp64".parse::<DType>().unwrap_err().to_string(),
            "unknown dtype `fp64` (expected fp32, bf16, fp16)"
        );
        assert_eq!(
            "rough".parse::<ActivationModel>().unwrap_err().what,
            "activation model"
        );
        assert_eq!(
            "xformers".parse::<AttentionImpl>().unwrap_err().what,
            "attention implementation"
        );
        assert_eq!(
            "selective".parse::<Checkpointing>().unwrap_err().what,
            "checkpointing"
        );
    }
}

//! Activation memory: what the forward pass saves for backward.
//!
//! Three models: the seed lab's rough rule, none, and a per-operation model of the Hugging Face
//! implementations (first cut from Korthikanti et al. 2022, `sbh(34 + 5as/h)` per layer with
//! 16-bit activations; to be corrected from measurements).

use super::MemorySettings;
use crate::error::CountError;
use crate::plan::{ActivationDtype, TrainingPlan};
use crate::shape::ModelShape;
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
    /// Full activation recomputation: each block keeps only its input, plus one block's worth
    /// while it is recomputed.
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
    /// Dropout probability; above 0, 1-byte masks are saved. `None`: no dropout.
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

pub fn estimate_activations(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
) -> Result<ActivationResult, CountError> {
    let act = settings.activations;
    let b = u128::from(settings.workload.batch);
    let s = u128::from(settings.workload.seq);
    let d = model.dims;
    let (h, layers) = (u128::from(d.hidden), u128::from(d.layers));
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

    // First cut: Korthikanti et al. with `c` bytes per element.
    let c = u128::from(settings.precision.compute_dtype().bytes());
    let a = u128::from(d.heads);
    let i = u128::from(d.intermediate);
    let sbh = s * b * h;
    let masks = act.dropout_masks();
    let mut attn = c * 5 * sbh + if masks { sbh } else { 0 };
    if act.attention == AttentionImpl::Eager {
        attn += 2 * c * a * s * s * b + if masks { a * s * s * b } else { 0 };
    }
    let mlp = c * (2 * s * b * i + sbh) + if masks { sbh } else { 0 };
    let norms = 2 * c * sbh;
    let per_layer = attn + mlp + norms;
    let blocks = match act.checkpointing {
        Checkpointing::None => per_layer * layers,
        Checkpointing::Full => c * sbh * layers + per_layer,
    };
    let (attn_total, mlp_total, norm_total) = match act.checkpointing {
        Checkpointing::None => (attn * layers, mlp * layers, norms * layers),
        Checkpointing::Full => (attn, mlp, norms + c * sbh * layers),
    };
    debug_assert_eq!(attn_total + mlp_total + norm_total, blocks);
    // Logits in the compute dtype and an fp32 copy for the loss.
    let v = u128::from(d.vocab);
    let logits = s * b * v * (c + 4);
    let mut regime: u128 = 0;
    for t in &plan.activation_terms {
        let bytes = match t.dtype {
            ActivationDtype::Compute => c,
            ActivationDtype::Dense(dt) => u128::from(dt.bytes()),
        };
        regime += (u128::from(t.per_token) * b * s + u128::from(t.fixed)) * bytes;
    }
    br.attention = to_u64(attn_total)?;
    br.mlp = to_u64(mlp_total)?;
    br.norms = to_u64(norm_total)?;
    br.logits_loss = to_u64(logits)?;
    br.regime = to_u64(regime)?;
    let total = attn_total + mlp_total + norm_total + logits + regime;
    let weight_casts = if settings.precision.autocast() {
        plan.groups
            .iter()
            .filter(|g| g.matmul_weight)
            .map(|g| u128::from(g.numel) * u128::from(g.count) * c)
            .sum()
    } else {
        0
    };
    Ok(ActivationResult {
        total: to_u64(total)?,
        weight_casts: to_u64(weight_casts)?,
        breakdown: br,
    })
}

//! Where a checkpointed backward peaks while it recomputes a block ([`recompute_moment`]), with
//! what differs between a mixture-of-experts model's dense and expert layers: their saved bytes,
//! their weight casts and the gradients of the layers after them.
//!
//! Only with checkpointing, off the default path.

use super::activations::{ActivationModel, ActivationResult};
use super::{MemorySettings, Precision};
use crate::plan::{ParamSource, PlannedParams, Storage, TrainingPlan, first_block_elements};
use crate::shape::{LayerKind, LayerSpan, MlpLayout, ModelShape};

/// The chosen recompute moment: gradients alive, saved bytes (checkpoints included), gradients
/// in flight and autocast's weight casts of the recomputed block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RecomputeMoment {
    pub gradients: u128,
    pub saved: u128,
    pub in_flight: u128,
    pub casts: u128,
}

/// The plan's trainable and cast elements by the layers they sit in ([`LayerKind`]).
#[derive(Debug, Default)]
struct LayerSums {
    /// Trainable elements whose gradients exist before any block's backward: the output head's,
    /// the final norm's and a tied embedding's (an untied embedding's gradient comes last).
    early: u128,
    /// Trainable elements in every block, in the dense layers and in the expert layers (over
    /// all of their layers).
    trainable: [u128; 3],
    /// Elements of the matmul weights autocast copies, in the same three places, and of those
    /// the first block's attention-input weights (not saved with a frozen embedding).
    casts: [u128; 3],
    first_block_casts: u128,
    /// Of `casts`, the dense MLPs' down projections' (freed once the down projection's backward
    /// has run, where a dense block's MLP backward peaks).
    down_casts: [u128; 3],
}

impl LayerSums {
    fn of(model: &ModelShape, plan: &TrainingPlan, settings: &MemorySettings) -> Self {
        let precision = settings.precision;
        let compute = precision.compute_dtype();
        let autocast = precision.autocast() && settings.activations.model == ActivationModel::Model;
        let mut sums = LayerSums::default();
        for g in plan.groups(model) {
            let Some(kind) = group_layers(model, &g) else {
                continue;
            };
            let elements = u128::from(g.numel) * u128::from(g.count);
            let slot = match kind {
                LayerKind::Outside => None,
                LayerKind::Every => Some(0),
                LayerKind::Dense => Some(1),
                LayerKind::Sparse => Some(2),
            };
            if g.trainable {
                match slot {
                    Some(i) => sums.trainable[i] += elements,
                    None if early_gradient(model, &g) => sums.early += elements,
                    None => {}
                }
            }
            let stored = match g.storage {
                Storage::Policy if g.trainable => Some(precision.trainable_dtype()),
                Storage::Policy => Some(settings.frozen_dtype()),
                Storage::Dense { dtype } => Some(dtype),
                Storage::Nf4(_) | Storage::Int8 => None,
            };
            if autocast
                && g.matmul_weight
                && stored.is_some_and(|d| d != compute)
                && let Some(i) = slot
            {
                sums.casts[i] += elements;
                sums.first_block_casts += u128::from(first_block_elements(model, &g));
                if reads_intermediate(model, &g) {
                    sums.down_casts[i] += elements;
                }
            }
        }
        sums
    }
}

/// The layers a planned group sits in (`None`: a buffer, or a regime's own tensor outside the
/// model's modules, whose gradient comes with the input's).
fn group_layers(model: &ModelShape, g: &PlannedParams) -> Option<LayerKind> {
    if g.origin == crate::plan::ParamOrigin::Buffer {
        return None;
    }
    match g.source {
        ParamSource::Base { param } => Some(model.param_layers(param)),
        ParamSource::Adapter { module, .. }
        | ParamSource::SavedWeight { module }
        | ParamSource::SavedBias { module } => Some(model.modules[module].layers),
        ParamSource::Extra { .. } => None,
    }
}

/// A base weight (or an adapter tensor reading the input) of a dense MLP's down projection: an
/// `nn.Linear` of the MLP from the intermediate width back to the hidden one.
fn reads_intermediate(model: &ModelShape, g: &PlannedParams) -> bool {
    let module = match g.source {
        ParamSource::Base { param } => match model.params[param].kind {
            crate::ParamKind::LinearWeight(m) => m,
            _ => return false,
        },
        ParamSource::Adapter {
            module,
            reads_input: true,
            ..
        } => module,
        _ => return false,
    };
    let m = &model.modules[module];
    m.group == crate::ModuleGroup::Mlp
        && m.host == crate::AdapterHost::Module
        && m.out_features == model.dims.hidden
        && m.in_features == model.dims.intermediate
}

/// An outside-the-blocks trained tensor whose gradient is made before the blocks' backward: all
/// but the input embeddings (a tied embedding's gradient comes with the head's).
fn early_gradient(model: &ModelShape, g: &PlannedParams) -> bool {
    match g.source {
        ParamSource::Base { param } => match model.params[param].kind {
            crate::ParamKind::Embedding => model.tied_embeddings,
            crate::ParamKind::PositionEmbedding => false,
            _ => true,
        },
        _ => true,
    }
}

/// Where a checkpointed backward peaks while it recomputes a block. Recomputing block `i` keeps
/// the checkpoints of blocks `0..=i`, the gradients of the head, the final norm and every later
/// block (dense and expert layers each with their own: [`LayerSpan::sparse_after`]), and the
/// block's own weight casts; its saved bytes and gradients in flight depend on its kind (dense
/// or experts). For each kind the largest is where it first or last occurs (the checkpoints grow
/// and the gradients shrink in `i`): the last block (every checkpoint, only the head's
/// gradients), the first (one checkpoint, every later block's gradients: full fine-tuning's
/// gradients outweigh the checkpoints), or, with dense and expert layers mixed, a block in
/// between (qwen3_moe's dense `mlp_only_layers`). A dense block's MLP backward peaks with its
/// down projection's weight gradient made (a trained base); the activation model's gradients in
/// flight include the residual's. With eager attention the block's attention backward follows,
/// its MLP's saved tensors freed and its weight gradients made. Measured on qwen3_moe
/// (`fixtures/memory/measured_peak.json`). With the optimizer in the backward each gradient is
/// freed once applied: only the last block's moments count.
#[cold]
pub(super) fn recompute_moment(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &MemorySettings,
    acts: &ActivationResult,
) -> RecomputeMoment {
    let precision: Precision = settings.precision;
    let base_trainable = plan.totals().base_trainable;
    let hidden = u128::from(model.dims.hidden);
    let gradient_bytes = u128::from(precision.gradient_dtype().bytes());
    let (down_gradient, mlp_gradients) = if base_trainable {
        let dense = hidden * u128::from(model.dims.intermediate) * gradient_bytes;
        let sparse = match model.mlp {
            MlpLayout::Experts(e) => {
                let shared = e.shared.map_or(0, |s| 3 * u128::from(s.intermediate));
                (u128::from(e.experts) * (3 * u128::from(e.intermediate) + 1) + shared)
                    * hidden
                    * gradient_bytes
            }
            _ => 0,
        };
        (dense, [3 * dense, sparse])
    } else {
        (0, [0, 0])
    };
    let sums = LayerSums::of(model, plan, settings);
    let layers = u128::from(model.dims.layers.max(1));
    let last = layers - 1;
    let (spans, sparse_layers) = match model.mlp {
        MlpLayout::Experts(e) => ([e.dense_span, e.sparse_span], u128::from(e.sparse_layers)),
        _ => (
            [
                Some(LayerSpan {
                    sparse_after: [0, 0],
                    ..LayerSpan::all_sparse(model.dims.layers)
                }),
                None,
            ],
            0,
        ),
    };
    let dense_layers = layers.saturating_sub(sparse_layers);
    // Per layer of each kind: a block-wide share plus the kind's own.
    let share = |total: u128, of: u128, n: u128| (total * n).checked_div(of).unwrap_or(0);
    let sharding = settings.sharding;
    let shard_gradients = |bytes: u128| {
        if sharding.zero_stage >= 2 {
            bytes.div_ceil(u128::from(sharding.gpus.max(1)))
        } else {
            bytes
        }
    };
    let compute_bytes = u128::from(precision.compute_dtype().bytes());
    let skip_first_block_casts = !base_trainable;
    let checkpoint = u128::from(acts.checkpoint);
    let mut best = (0, RecomputeMoment::default());
    let [dense, sparse, [attention_saved, attention_in_flight]] = acts.recompute;
    let kinds = [
        (dense, spans[0], down_gradient, mlp_gradients[0], 1),
        (sparse, spans[1], 0, mlp_gradients[1], 2),
    ];
    for ([saved, in_flight], span, own, mlp, kind) in kinds {
        let Some(span) = span.filter(|_| saved > 0) else {
            continue;
        };
        let kind_layers = if kind == 1 {
            dense_layers
        } else {
            sparse_layers
        };
        let positions = [span.first, span.last].into_iter().zip(span.sparse_after);
        for (i, sparse_after) in positions {
            let i = u128::from(i);
            if settings.step.optimizer_in_backward && i != last {
                continue;
            }
            let after = last - i;
            let sparse_after = u128::from(sparse_after).min(after);
            let later_elements = sums.early
                + share(sums.trainable[0], layers, after)
                + share(sums.trainable[1], dense_layers, after - sparse_after)
                + share(sums.trainable[2], sparse_layers, sparse_after);
            let later = shard_gradients(later_elements * gradient_bytes);
            let mut cast_elements =
                sums.casts[0].div_ceil(layers) + share(sums.casts[kind], kind_layers, 1);
            if kind == 1 {
                // The dense MLP backward peaks once its down projection's backward has run.
                let down =
                    sums.down_casts[0].div_ceil(layers) + share(sums.down_casts[1], kind_layers, 1);
                cast_elements = cast_elements.saturating_sub(down);
            }
            if i == 0 && skip_first_block_casts {
                cast_elements = cast_elements.saturating_sub(sums.first_block_casts);
            }
            let casts = cast_elements * compute_bytes;
            let checkpoints = (i + 1) * checkpoint;
            let mut moments = [RecomputeMoment {
                gradients: later + own,
                saved: u128::from(saved) + checkpoints,
                in_flight: u128::from(in_flight),
                casts,
            }; 2];
            if attention_in_flight > 0 {
                moments[1] = RecomputeMoment {
                    gradients: later + mlp,
                    saved: u128::from(attention_saved) + checkpoints,
                    in_flight: u128::from(attention_in_flight),
                    casts,
                };
            }
            for m in moments {
                let total = m.gradients + m.saved + m.in_flight + m.casts;
                if total > best.0 {
                    best = (total, m);
                }
            }
        }
    }
    best.1
}

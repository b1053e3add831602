//! FLOPs of one training step, counted as `torch.utils.flop_counter.FlopCounterMode` counts them:
//! matmul-type operations only (mm, addmm, bmm, baddbmm, scaled-dot-product attention), two FLOPs
//! per multiply-add, for one forward and one `loss.backward()` (the optimizer has no matmul).
//! Held to the records of `fixtures/flops/measured_flops.json` (torch 2.15, transformers 5.24,
//! peft 0.21) by `crates/core/tests/flops_measured.rs`.
//!
//! What the counter records, and so what is counted here:
//! - A Linear `in -> out` on `T` tokens: `2 T in out` forward; backward the input gradient (the
//!   same figure) when its input requires a gradient, and the weight gradient (the same again)
//!   when the weight is trainable. A frozen weight (LoRA's base) skips the weight gradient. In the
//!   first block, the projections reading the block input (q, k, v, a fused qkv, latent
//!   attention's `q_a_proj` and `kv_a_proj_with_mqa`) skip the input gradient when the embedding
//!   output needs none (a frozen embedding without checkpointing: with checkpointing peft calls
//!   `enable_input_require_grads()`, so it does).
//! - The lm_head on every position, its input gradient always, its weight gradient when trained
//!   (a tied lm_head when the embedding is).
//! - Routed experts run on `batch x seq x top_k` tokens per sparse layer in total (which expert
//!   gets which token is data-dependent, the total is not); routers and shared experts on every
//!   token.
//! - Attention per layer with `h` query heads (keys and values repeated for GQA), query/key head
//!   size `d_qk` and value head size `d_v`, sequence `s`: eager's two batched matmuls
//!   `2 b h s^2 (d_qk + d_v)` forward and their four gradients backward (in the first block only
//!   those of the q, k, v that require a gradient); sdpa and flash by FlopCounterMode's own
//!   formulas, the same forward and `2 b h s^2 (3 d_qk + 2 d_v)` backward (it counts the scores'
//!   recompute; no causal or sliding-window discount).
//! - Adapters: each matmul tensor of an [`AdapterLayout`] (LoRA's A and B) is a Linear of its own
//!   size on the module's tokens, trainable or not. DoRA (a `lora_magnitude_vector` piece) also
//!   builds `lora_B(lora_A(eye(in)))` every forward (`2 r in (in + out)` per module, no
//!   gradient: the weight norm is detached), plus `x W` again when `lora_dropout` is on. An
//!   adapter on a parameter host (peft's `ParamWrapper` on MoE experts and routers) adds
//!   `scaling B A` to the weight every forward (`2 r in out` per expert; on stacked experts
//!   twice, as `register_parametrization` evaluates it once to check it), two gradient matmuls
//!   of that size backward, and makes the effective weight need its weight gradient.
//! - Checkpointing (non-reentrant, per block) recomputes each block's forward inside
//!   `backward()`, but stops as soon as every saved tensor is back: with pre-norm (or parallel)
//!   blocks the MLP's output projection is not recomputed (its output is added to the residual,
//!   which saves nothing), nor LoRA's B on it; DoRA's magnitude and a post-norm save that output,
//!   so the whole block is recomputed.
//!
//! Measured and held exactly: llama, qwen3, gpt2, olmo2, gemma3_text, qwen3_moe, mixtral,
//! deepseek_v3 (see the fixture's README for the kernels the counter cannot see: MoE models were
//! run with the eager experts loop, as `torch._grouped_mm` counts 0). Derived but not measured:
//! parallel-residual blocks (phi, falcon: the MLP's output projection taken as the block's last
//! matmul), and targets that leave the first block's attention with nothing trainable (`mlp`
//! only, without checkpointing): the first block's o_proj and MLP input gradients are then
//! counted although PyTorch skips them (a slight over-count, one layer's worth).
//!
//! Not counted, as the counter does not: norms, activations, softmax, rotary embeddings, the loss,
//! dequantization. bitsandbytes' 4-bit matmul on CPU is a custom op the counter cannot see
//! ([`FlopSettings::nf4_forward_counted`]); on GPU it dequantizes and calls `F.linear`, which is
//! what is counted by default.

use crate::error::CountError;
use crate::memory::{AttentionImpl, Checkpointing, MemorySettings};
use crate::plan::{AdapterSite, BaseTraining, ParamSource, PieceMatmul, PieceRole, TrainingPlan};
use crate::shape::{
    AdapterHost, AttentionLayout, LinearModule, MlpLayout, ModelShape, ModuleGroup, NormPlacement,
    ParamKind,
};
use serde::Serialize;

/// FLOPs of one training step, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepFlops {
    /// The forward pass.
    pub forward: u128,
    /// The gradient matmuls of `loss.backward()` (input and weight gradients, attention's
    /// backward), the recompute left out.
    pub backward: u128,
    /// The forward matmuls checkpointing repeats inside `backward()` (0 without checkpointing).
    /// FlopCounterMode's backward total is `backward + recompute`.
    pub recompute: u128,
    /// `forward + backward + recompute`.
    pub step: u128,
    /// `step` over the step's tokens (`batch x seq`), rounded down.
    pub per_token: u128,
}

/// What the FLOP count depends on beyond the model and the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlopSettings {
    pub batch: u64,
    pub seq: u64,
    pub attention: AttentionImpl,
    pub checkpointing: Checkpointing,
    /// `lora_dropout` above 0: DoRA then computes the base output a second time on the dropped
    /// input.
    pub adapter_dropout: bool,
    /// Count the forward matmuls of NF4-stored weights (bitsandbytes on GPU: dequantize, then
    /// `F.linear`). `false` reproduces a CPU measurement, where bitsandbytes' `gemm_4bit` is an
    /// op FlopCounterMode does not see (its backward is still `dequantize` + `matmul`, counted).
    pub nf4_forward_counted: bool,
}

impl FlopSettings {
    /// The settings of a memory estimate (its workload, attention and checkpointing).
    pub fn of(settings: &MemorySettings) -> Self {
        let a = &settings.activations;
        FlopSettings {
            batch: settings.workload.batch,
            seq: settings.workload.seq,
            attention: a.attention,
            checkpointing: a.checkpointing,
            adapter_dropout: a.dropout.is_some_and(|p| p > 0.0),
            nf4_forward_counted: true,
        }
    }
}

/// Running sums, each checked.
#[derive(Default)]
struct Sums {
    forward: u128,
    backward: u128,
    recompute: u128,
    overflow: bool,
}

/// The checked product of `factors`.
fn product(factors: &[u64]) -> Option<u128> {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(u128::from(f)))
}

impl Sums {
    fn add(slot: &mut u128, overflow: &mut bool, v: Option<u128>) {
        match v.and_then(|v| slot.checked_add(v)) {
            Some(s) => *slot = s,
            None => *overflow = true,
        }
    }
    fn forward(&mut self, v: Option<u128>) {
        Self::add(&mut self.forward, &mut self.overflow, v);
    }
    fn backward(&mut self, v: Option<u128>) {
        Self::add(&mut self.backward, &mut self.overflow, v);
    }
    fn recompute(&mut self, v: Option<u128>) {
        Self::add(&mut self.recompute, &mut self.overflow, v);
    }
    /// Subtract a part already added (never more than was added).
    fn less(slot: &mut u128, v: Option<u128>) {
        if let Some(v) = v {
            *slot = slot.saturating_sub(v);
        }
    }
}

/// What the plan trains on each module, read once per estimate.
#[derive(Debug, Clone, Copy, Default)]
struct ModuleTraining {
    weight: bool,
    bias: bool,
    adapted: bool,
}

impl ModuleTraining {
    fn has_gradient(self) -> bool {
        self.weight || self.bias || self.adapted
    }
}

/// The FLOPs of one step of `plan` on `model`.
pub fn step_flops(
    model: &ModelShape,
    plan: &TrainingPlan,
    settings: &FlopSettings,
) -> Result<StepFlops, CountError> {
    let err = CountError { what: "flops" };
    let seq = settings
        .seq
        .checked_add(plan.extra_tokens())
        .ok_or(err.clone())?;
    let tokens = settings.batch.checked_mul(seq).ok_or(err.clone())?;
    let training = module_training(model, plan);
    let ctx = Context {
        model,
        settings,
        tokens,
        seq,
        checkpointing: settings.checkpointing.recomputes(),
        input_requires_grad: embedding_trained(model, plan)
            || settings.checkpointing.recomputes()
            || plan.extra_tokens() > 0,
        nf4_blocks: plan.nf4_block_linears(),
    };
    let mut sums = Sums::default();
    for (index, m) in model.modules.iter().enumerate() {
        ctx.base_linear(&mut sums, index, m, training(index));
    }
    for site in plan.adapters() {
        ctx.adapter(&mut sums, site);
    }
    ctx.attention(&mut sums, &training);
    if sums.overflow {
        return Err(err);
    }
    let step = sums
        .forward
        .checked_add(sums.backward)
        .and_then(|s| s.checked_add(sums.recompute))
        .ok_or(err)?;
    let user_tokens = u128::from(settings.batch) * u128::from(settings.seq);
    Ok(StepFlops {
        forward: sums.forward,
        backward: sums.backward,
        recompute: sums.recompute,
        step,
        per_token: step / user_tokens.max(1),
    })
}

/// The embedding is trained (full fine-tuning, or a saved copy): its output needs a gradient.
fn embedding_trained(model: &ModelShape, plan: &TrainingPlan) -> bool {
    if plan.base().is_some_and(|b| b.training == BaseTraining::All) {
        return true;
    }
    plan.extra_groups().iter().any(|g| {
        g.trainable
            && matches!(g.source, ParamSource::Base { param }
                if model.params[param].kind == ParamKind::Embedding)
    })
}

/// Per module: which of its tensors the plan trains. Base treatments are one rule for every
/// module; extra groups (saved copies, base parameters planned one by one) and adapter sites are
/// few, and are searched in place (sweeps call this per point: nothing is allocated).
fn module_training(model: &ModelShape, plan: &TrainingPlan) -> impl Fn(usize) -> ModuleTraining {
    let base = plan.base().map(|b| b.training);
    let all = base == Some(BaseTraining::All);
    let biases = base == Some(BaseTraining::Biases);
    let embedding_trained = embedding_trained(model, plan);
    let extra = plan.extra_groups();
    let adapters = plan.adapters();
    move |i| {
        let m = &model.modules[i];
        let mut t = ModuleTraining {
            weight: if m.weight_tied {
                embedding_trained
            } else {
                all
            },
            bias: (all || biases) && m.bias,
            adapted: adapters.iter().any(|s| s.module == i),
        };
        for g in extra.iter().filter(|g| g.trainable) {
            match g.source {
                ParamSource::Base { param } => match model.params[param].kind {
                    ParamKind::LinearWeight(j) if j == i => t.weight = true,
                    ParamKind::LinearBias(j) if j == i => t.bias = true,
                    _ => {}
                },
                ParamSource::SavedWeight { module } if module == i => t.weight = true,
                ParamSource::SavedBias { module } if module == i => t.bias = true,
                _ => {}
            }
        }
        t
    }
}

struct Context<'a> {
    model: &'a ModelShape,
    settings: &'a FlopSettings,
    /// `batch x (seq + extra tokens)`.
    tokens: u64,
    seq: u64,
    checkpointing: bool,
    /// The embedding output requires a gradient.
    input_requires_grad: bool,
    /// The plan stores the blocks' Linear weights in NF4.
    nf4_blocks: bool,
}

/// How a module's output projection ends its block, for the recompute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Some later operation of the block saves the module's output: recomputed in full.
    No,
    /// The block's last matmul: its output is only added to the residual stream.
    Last,
}

impl Context<'_> {
    /// Token-instances a module's matmul runs on: `tokens x count`, or for routed experts
    /// `tokens x top_k` per sparse layer.
    fn token_instances(&self, m: &LinearModule) -> Option<u128> {
        match routed_experts(self.model, m) {
            Some((top_k, layers)) => product(&[self.tokens, top_k, layers]),
            None => product(&[self.tokens, m.count]),
        }
    }

    /// A block Linear whose forward the counter cannot see: stored in NF4 (bitsandbytes swaps
    /// `nn.Linear` modules only, not routers or fused 3-D experts) and measured on CPU.
    fn nf4_hidden(&self, m: &LinearModule) -> bool {
        self.nf4_blocks
            && !self.settings.nf4_forward_counted
            && m.in_blocks()
            && m.group != ModuleGroup::Router
            && routed_experts(self.model, m).is_none()
    }

    /// Token-instances of the first block that skip the input gradient (the attention-input
    /// projections when the embedding output needs no gradient).
    fn first_block_skipped(&self, m: &LinearModule) -> Option<u128> {
        if self.input_requires_grad {
            return Some(0);
        }
        product(&[self.tokens, m.first_block_instances(self.model.dims.layers)])
    }

    fn base_linear(&self, sums: &mut Sums, index: usize, m: &LinearModule, t: ModuleTraining) {
        let n = self.token_instances(m);
        let flops = n.and_then(|n| n.checked_mul(2 * u128::from(m.weight_numel())));
        let forward_counted = !self.nf4_hidden(m);
        if forward_counted {
            sums.forward(flops);
        }
        // Input gradient, but not in the first block's input projections without an input
        // gradient.
        sums.backward(flops);
        let skipped = self
            .first_block_skipped(m)
            .and_then(|k| k.checked_mul(2 * u128::from(m.weight_numel())));
        Sums::less(&mut sums.backward, skipped);
        let param_host_adapted = t.adapted && matches!(m.host, AdapterHost::Parameter { .. });
        if t.weight || param_host_adapted {
            sums.backward(flops);
        }
        if self.checkpointing && m.in_blocks() && forward_counted {
            // At the block's end the output projection is not recomputed; an adapter on it runs
            // later and saves its input, so `adapter` counts the base matmul back.
            if self.tail(index) == Tail::No {
                sums.recompute(flops);
            }
        }
    }

    /// Whether `modules[index]` is the block's last matmul (pre-norm and parallel blocks' MLP
    /// output projections, not followed by a gate or routing weight).
    fn tail(&self, index: usize) -> Tail {
        let model = self.model;
        if !matches!(
            model.block.norm_placement,
            NormPlacement::Pre | NormPlacement::Parallel
        ) {
            return Tail::No;
        }
        let m = &model.modules[index];
        if m.group != ModuleGroup::Mlp
            || routed_experts(model, m).is_some()
            || index == 0
            || m.out_features != model.dims.hidden
        {
            return Tail::No;
        }
        let prev = &model.modules[index - 1];
        let same_prefix = parent(&prev.path) == parent(&m.path);
        let feeds = prev.out_features == m.in_features || prev.out_features == 2 * m.in_features;
        if prev.group != ModuleGroup::Mlp
            || !same_prefix
            || !feeds
            || prev.in_features != model.dims.hidden
        {
            return Tail::No;
        }
        if let MlpLayout::Experts(e) = model.mlp
            && let Some(shared) = e.shared
            && shared.gate
            && m.count == e.sparse_layers
            && m.in_features == shared.intermediate
        {
            // Qwen2-MoE multiplies the shared experts' output by their sigmoid gate.
            return Tail::No;
        }
        Tail::Last
    }

    fn adapter(&self, sums: &mut Sums, site: &AdapterSite) {
        let m = &self.model.modules[site.module];
        let (r, layout) = (site.rank, site.layout);
        if let AdapterHost::Parameter { .. } = m.host {
            // peft's ParamWrapper: W + scaling B A every forward, the two gradients of that
            // product backward. On stacked experts the product is a `baddbmm` inside the
            // parametrization, which `register_parametrization` also evaluates once to check its
            // output: twice per forward. A router's (one matrix) is one `mm` computed before
            // registering, the parametrization only adds it.
            let delta = product(&[2, r, m.in_features, m.out_features, m.count]);
            let evaluations = if routed_experts(self.model, m).is_some() {
                2
            } else {
                1
            };
            let forward = delta.and_then(|d| d.checked_mul(evaluations));
            sums.forward(forward);
            sums.backward(delta.and_then(|d| d.checked_mul(2)));
            if self.checkpointing {
                sums.recompute(forward);
            }
            return;
        }
        let n = self.token_instances(m);
        let tail = self.tail(site.module) == Tail::Last;
        let multiplies_output = layout.pieces().iter().any(|p| {
            p.role == PieceRole::Trainable
                && p.matmul == PieceMatmul::No
                && !p.name.ends_with("bias")
        });
        let last_inner = layout
            .pieces()
            .iter()
            .rposition(|p| p.matmul == PieceMatmul::Inner);
        for (i, p) in layout.pieces().iter().enumerate() {
            if p.matmul == PieceMatmul::No {
                continue;
            }
            let size = p.size.total(r, m.in_features, m.out_features, 1);
            let flops = n
                .zip(size)
                .and_then(|(n, s)| n.checked_mul(2 * u128::from(s)));
            sums.forward(flops);
            sums.backward(flops);
            if p.matmul == PieceMatmul::Input {
                let skipped = self
                    .first_block_skipped(m)
                    .zip(size)
                    .and_then(|(k, s)| k.checked_mul(2 * u128::from(s)));
                Sums::less(&mut sums.backward, skipped);
            }
            if p.role == PieceRole::Trainable {
                sums.backward(flops);
            }
            let unsaved_end = tail && !multiplies_output && Some(i) == last_inner;
            if self.checkpointing && m.in_blocks() && !unsaved_end {
                sums.recompute(flops);
            }
        }
        if tail && self.checkpointing && m.in_blocks() {
            // The base matmul runs before the adapter, whose saved tensors come later: it is
            // recomputed after all.
            let base = n.and_then(|n| n.checked_mul(2 * u128::from(m.weight_numel())));
            if !self.nf4_hidden(m) {
                sums.recompute(base);
            }
        }
        if layout.pieces().iter().any(|p| p.name == DORA_MAGNITUDE) {
            self.dora_extra(sums, m, r, n);
        }
    }

    /// DoRA's weight norm: `lora_B(lora_A(eye(in)))` per module instance, detached; with
    /// `lora_dropout`, the base output again on the dropped input.
    fn dora_extra(&self, sums: &mut Sums, m: &LinearModule, r: u64, n: Option<u128>) {
        let norm = product(&[2, r, m.in_features, m.in_features + m.out_features, m.count]);
        sums.forward(norm);
        if self.checkpointing && m.in_blocks() {
            sums.recompute(norm);
        }
        if self.settings.adapter_dropout {
            let base = n.and_then(|n| n.checked_mul(2 * u128::from(m.weight_numel())));
            sums.forward(base);
            sums.backward(base);
            if self.checkpointing && m.in_blocks() {
                sums.recompute(base);
            }
        }
    }

    fn attention(&self, sums: &mut Sums, training: &impl Fn(usize) -> ModuleTraining) {
        let model = self.model;
        let d = model.dims;
        let (d_qk, d_v) = match model.attention {
            AttentionLayout::Latent(l) => (l.qk_nope_head_dim + l.qk_rope_head_dim, l.v_head_dim),
            _ => (d.head_dim, d.head_dim),
        };
        // One batched matmul of the scores' size per unit of head dimension.
        let unit = product(&[2, self.settings.batch, d.heads, self.seq, self.seq]);
        let per = |dim: u64| unit.and_then(|u| u.checked_mul(u128::from(dim)));
        let layers = u128::from(d.layers);
        let forward = per(d_qk + d_v);
        sums.forward(forward.and_then(|f| f.checked_mul(layers)));
        if self.checkpointing {
            sums.recompute(forward.and_then(|f| f.checked_mul(layers)));
        }
        let (q, k, v) = self.first_block_qkv_gradients(training);
        let (full, first) = match self.settings.attention.on(model) {
            AttentionImpl::Eager => {
                let full = per(2 * d_qk + 2 * d_v);
                let first = per(d_qk * u64::from(q)
                    + d_qk * u64::from(k)
                    + d_v * u64::from(q || k)
                    + d_v * u64::from(v));
                (full, first)
            }
            AttentionImpl::Sdpa | AttentionImpl::Flash => {
                let full = per(3 * d_qk + 2 * d_v);
                (full, if q || k || v { full } else { Some(0) })
            }
        };
        let rest = full.and_then(|f| f.checked_mul(layers - 1));
        sums.backward(rest);
        sums.backward(first);
    }

    /// Whether the first block's queries, keys and values require a gradient.
    fn first_block_qkv_gradients(
        &self,
        training: &impl Fn(usize) -> ModuleTraining,
    ) -> (bool, bool, bool) {
        if self.input_requires_grad {
            return (true, true, true);
        }
        let model = self.model;
        let grad = |name: &str| {
            model
                .modules
                .iter()
                .position(|m| m.group == ModuleGroup::Attention && m.name == name)
                .is_some_and(|i| training(i).has_gradient())
        };
        // The attention-input projections in declaration order: q, k, v (or one fused qkv).
        let input_grad = |k: usize| {
            (0..model.modules.len())
                .filter(|&i| model.modules[i].reads_attention_input)
                .nth(k)
                .is_some_and(|i| training(i).has_gradient())
        };
        match model.attention {
            AttentionLayout::Separate => (input_grad(0), input_grad(1), input_grad(2)),
            AttentionLayout::FusedQkv => {
                let g = input_grad(0);
                (g, g, g)
            }
            AttentionLayout::Latent(_) => {
                let q = grad("q_a_proj") || grad("q_b_proj") || grad("q_proj");
                let kv = grad("kv_a_proj_with_mqa") || grad("kv_b_proj");
                (q, kv, kv)
            }
        }
    }
}

/// peft's DoRA magnitude vector: the piece that marks a DoRA adapter.
const DORA_MAGNITUDE: &str = "lora_magnitude_vector";

/// The path up to its last component.
fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(p, _)| p)
}

/// For the fused routed experts of a mixture of experts (`count = sparse layers x experts`,
/// `hidden -> 2 x intermediate` or `intermediate -> hidden`): `(top_k, sparse layers)`.
fn routed_experts(model: &ModelShape, m: &LinearModule) -> Option<(u64, u64)> {
    let MlpLayout::Experts(e) = model.mlp else {
        return None;
    };
    let h = model.dims.hidden;
    let dims = (m.in_features, m.out_features);
    let expert_dims = dims == (h, 2 * e.intermediate) || dims == (e.intermediate, h);
    (m.group == ModuleGroup::Mlp
        && e.experts > 1
        && m.count == e.sparse_layers * e.experts
        && expert_dims)
        .then_some((e.top_k, e.sparse_layers))
}

/// A plan's step FLOPs as a function of the workload, precomputed once per plan so that a sweep
/// row costs a few multiplies instead of a walk over the model.
///
/// Every count [`step_flops`] adds is, for fixed attention, checkpointing, dropout and NF4
/// settings, one of three kinds: per token (`batch x s'` with `s' = seq + extra tokens`: every
/// Linear and adapter matmul, and the first block's skipped gradients), per attention score
/// (`batch x s'^2`: the attention matmuls) or per step (peft's parametrized weight deltas, DoRA's
/// weight norm). So forward, backward and recompute are each `constant + b s' per_token +
/// b s'^2 per_score`, and the three coefficients are read exactly off `step_flops` at three
/// workloads ((1, 1), (2, 1), (1, 2)); [`FlopUnits::at`] evaluates the form with checked
/// arithmetic. A test holds it equal to `step_flops` over every preset and regime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlopUnits {
    extra_tokens: u64,
    /// `[forward, backward, recompute]` each.
    constant: [u128; 3],
    per_token: [u128; 3],
    per_score: [u128; 3],
}

impl FlopUnits {
    /// The units of `plan` on `model` under `settings` (its batch and seq are not read).
    pub fn of(
        model: &ModelShape,
        plan: &TrainingPlan,
        settings: &FlopSettings,
    ) -> Result<Self, CountError> {
        let err = CountError { what: "flops" };
        let at = |batch: u64, seq: u64| {
            step_flops(
                model,
                plan,
                &FlopSettings {
                    batch,
                    seq,
                    ..*settings
                },
            )
            .map(|f| [f.forward, f.backward, f.recompute])
        };
        let (f11, f21, f12) = (at(1, 1)?, at(2, 1)?, at(1, 2)?);
        let e = plan.extra_tokens();
        // p = s' at seq 1.
        let p = u128::from(e.checked_add(1).ok_or(err.clone())?);
        let mut units = FlopUnits {
            extra_tokens: e,
            ..FlopUnits::default()
        };
        for k in 0..3 {
            // f(1, p) = C + p L + p^2 A; f(2, p) - f(1, p) = p (L + p A);
            // f(1, p + 1) - f(1, p) = L + (2p + 1) A.
            let d1 = f21[k].checked_sub(f11[k]).ok_or(err.clone())? / p;
            let d2 = f12[k].checked_sub(f11[k]).ok_or(err.clone())?;
            let a = d2.checked_sub(d1).ok_or(err.clone())? / (p + 1);
            // C = f(1, p) - p (L + p A).
            let pa = p.checked_mul(a).ok_or(err.clone())?;
            let l = d1.checked_sub(pa).ok_or(err.clone())?;
            let c = l
                .checked_add(pa)
                .and_then(|v| v.checked_mul(p))
                .and_then(|v| f11[k].checked_sub(v))
                .ok_or(err.clone())?;
            units.constant[k] = c;
            units.per_token[k] = l;
            units.per_score[k] = a;
        }
        Ok(units)
    }

    /// The step's FLOPs at `batch x seq`, exact (an error when a count leaves `u128`).
    pub fn at(&self, batch: u64, seq: u64) -> Result<StepFlops, CountError> {
        let err = CountError { what: "flops" };
        let s = u128::from(seq.checked_add(self.extra_tokens).ok_or(err.clone())?);
        let tokens = u128::from(batch) * s;
        let scores = tokens.checked_mul(s).ok_or(err.clone())?;
        let mut out = [0u128; 3];
        for (k, slot) in out.iter_mut().enumerate() {
            *slot = tokens
                .checked_mul(self.per_token[k])
                .and_then(|t| scores.checked_mul(self.per_score[k])?.checked_add(t))
                .and_then(|v| v.checked_add(self.constant[k]))
                .ok_or(err.clone())?;
        }
        let [forward, backward, recompute] = out;
        let step = forward
            .checked_add(backward)
            .and_then(|v| v.checked_add(recompute))
            .ok_or(err)?;
        let user_tokens = u128::from(batch) * u128::from(seq);
        Ok(StepFlops {
            forward,
            backward,
            recompute,
            step,
            per_token: step / user_tokens.max(1),
        })
    }
}

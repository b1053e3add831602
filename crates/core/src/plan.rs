//! A training plan: what a regime decides. Which parameter tensors exist (base, adapters, saved
//! copies), which are trainable, how each group is stored, and any activation memory the regime
//! adds. The memory model turns a plan into bytes; the counts below give peft's figures.

use crate::dtype::DType;
use crate::error::CountError;
use crate::shape::{GroupAdapterUnits, ModelShape, ModuleGroup, ParamKind};
use serde::Serialize;

/// Where a parameter group comes from; peft's `all params` counts every origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamOrigin {
    /// A parameter of the base model (trainable under full fine-tuning or `bias=`).
    Base,
    /// A parameter the regime adds (LoRA A/B, lora_B bias, DoRA magnitude).
    Adapter,
    /// A trainable copy of a base module (`modules_to_save`).
    SavedCopy,
}

/// bitsandbytes' 4-bit NF4 storage of one weight tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Nf4Layout {
    /// Elements per absmax block (bitsandbytes' default 64).
    pub blocksize: u64,
    /// QLoRA's double quantization: absmax stored as uint8 with fp32 nested absmax per
    /// `nested_blocksize` blocks and one fp32 offset.
    pub double_quant: bool,
    pub nested_blocksize: u64,
    /// Count the per-tensor codebooks bitsandbytes keeps in each quant state (16 fp32, plus 256
    /// fp32 with double quant). The seed's rule leaves them out.
    pub codebooks: bool,
    /// Absmax element size without double quantization (bitsandbytes: fp32). The seed lab's text
    /// says fp16 but its arithmetic (4/64 B per weight) is fp32.
    pub absmax_dtype: DType,
}

impl Nf4Layout {
    pub const fn bitsandbytes(double_quant: bool) -> Self {
        Nf4Layout {
            blocksize: 64,
            double_quant,
            nested_blocksize: 256,
            codebooks: true,
            absmax_dtype: DType::F32,
        }
    }

    /// Exact bytes of one quantized tensor of `numel` elements.
    pub fn tensor_bytes(&self, numel: u64) -> u64 {
        let packed = numel.div_ceil(2);
        let blocks = div_ceil(numel, self.blocksize.max(1));
        let stats = if self.double_quant {
            let nested = div_ceil(blocks, self.nested_blocksize.max(1));
            blocks + 4 * nested + 4
        } else {
            blocks * self.absmax_dtype.bytes()
        };
        let codebooks = match (self.codebooks, self.double_quant) {
            (false, _) => 0,
            (true, false) => 16 * 4,
            (true, true) => 16 * 4 + 256 * 4,
        };
        packed + stats + codebooks
    }
}

/// `n.div_ceil(d)`, by a shift when `d` is a power of two (bitsandbytes' block sizes are): a
/// division by a value known only at run time is the slowest step of planning QLoRA.
#[inline]
fn div_ceil(n: u64, d: u64) -> u64 {
    if d.is_power_of_two() {
        (n >> d.trailing_zeros()) + u64::from(n & (d - 1) != 0)
    } else {
        n.div_ceil(d)
    }
}

/// How a parameter group is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Storage {
    /// As the precision policy says for trainable or frozen parameters.
    Policy,
    /// A fixed dense dtype whatever the policy.
    Dense { dtype: DType },
    /// 4-bit NormalFloat (frozen only).
    Nf4(Nf4Layout),
}

/// Which tensor a planned group is, by index into the model (no strings: plans are built in the
/// hot path of sweeps). [`ParamSource::describe`] gives the peft-style name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ParamSource {
    /// `model.params[param]`.
    Base {
        param: usize,
    },
    LoraA {
        module: usize,
    },
    LoraB {
        module: usize,
    },
    LoraBBias {
        module: usize,
    },
    DoraMagnitude {
        module: usize,
    },
    /// The `modules_to_save` copy of a module's weight.
    SavedWeight {
        module: usize,
    },
    SavedBias {
        module: usize,
    },
}

impl ParamSource {
    /// The parameter name with layer indices as `*`, as peft would show it.
    pub fn describe(&self, model: &ModelShape) -> String {
        let module = |m: usize| model.modules[m].path.as_str();
        match *self {
            ParamSource::Base { param } => model.params[param].name.clone(),
            ParamSource::LoraA { module: m } => format!("{}.lora_A.weight", module(m)),
            ParamSource::LoraB { module: m } => format!("{}.lora_B.weight", module(m)),
            ParamSource::LoraBBias { module: m } => format!("{}.lora_B.bias", module(m)),
            ParamSource::DoraMagnitude { module: m } => {
                format!("{}.lora_magnitude_vector", module(m))
            }
            ParamSource::SavedWeight { module: m } => {
                format!("{}.modules_to_save.weight", module(m))
            }
            ParamSource::SavedBias { module: m } => format!("{}.modules_to_save.bias", module(m)),
        }
    }
}

/// `count` tensors of `numel` elements, all alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedParams {
    pub source: ParamSource,
    pub numel: u64,
    pub count: u64,
    pub trainable: bool,
    pub origin: ParamOrigin,
    pub storage: Storage,
    /// A Linear weight whose matmul runs in the compute dtype (autocast saves a 16-bit copy).
    pub matmul_weight: bool,
}

impl PlannedParams {
    pub fn total(&self) -> u64 {
        self.numel * self.count
    }
}

/// A low-rank adapter (`x A B`, peft's `lora.Linear` and relatives) on `model.modules[module]`,
/// whose sizes it takes. A site stands for its parameter groups ([`AdapterSite::groups`]:
/// lora_A `rank x in`, lora_B `out x rank`, and when asked a lora_B bias and a DoRA magnitude of
/// `out` each; all trainable, one of each per module instance) and for the activation every
/// low-rank adapter saves: `x A`, `rank` elements per token and instance in the compute dtype,
/// for B's backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdapterSite {
    pub module: usize,
    /// The adapter's rank (peft's `r` times the host's rank factor).
    pub rank: u64,
    /// DoRA: one trainable magnitude per output feature.
    pub dora: bool,
    /// A trainable bias on lora_B (peft's `lora_bias`).
    pub lora_bias: bool,
}

impl AdapterSite {
    /// The parameter groups the site stands for on `model`, in peft's order.
    pub fn groups(&self, model: &ModelShape) -> impl Iterator<Item = PlannedParams> + use<> {
        let site = *self;
        let m = &model.modules[site.module];
        let (in_features, out, count) = (m.in_features, m.out_features, m.count);
        let group = move |source: ParamSource, numel: u64, matmul_weight: bool| PlannedParams {
            source,
            numel,
            count,
            trainable: true,
            origin: ParamOrigin::Adapter,
            storage: Storage::Policy,
            matmul_weight,
        };
        let module = site.module;
        [
            Some(group(
                ParamSource::LoraA { module },
                site.rank.saturating_mul(in_features),
                true,
            )),
            Some(group(
                ParamSource::LoraB { module },
                site.rank.saturating_mul(out),
                true,
            )),
            site.lora_bias
                .then(|| group(ParamSource::LoraBBias { module }, out, false)),
            site.dora
                .then(|| group(ParamSource::DoraMagnitude { module }, out, false)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Which base parameters a [`BaseTreatment`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseTraining {
    /// None: the base is frozen.
    Frozen,
    /// Every base parameter (full fine-tuning).
    All,
    /// Every bias, norm biases included (peft's `bias="all"`).
    Biases,
}

/// How a plan treats the base model's own parameters, one rule for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BaseTreatment {
    pub training: BaseTraining,
    /// How Linear weights inside the blocks are stored (QLoRA: NF4); every other base parameter
    /// follows the precision policy.
    pub block_linear_storage: Storage,
}

impl BaseTreatment {
    /// The planned group of `model.params[param]`.
    pub fn group(&self, model: &ModelShape, param: usize) -> PlannedParams {
        let p = &model.params[param];
        let trainable = match self.training {
            BaseTraining::Frozen => false,
            BaseTraining::All => true,
            BaseTraining::Biases => p.kind.is_bias(),
        };
        let (storage, matmul_weight) = match p.kind {
            ParamKind::LinearWeight(i) if model.modules[i].in_blocks() => (
                self.block_linear_storage,
                !matches!(self.block_linear_storage, Storage::Nf4(_)),
            ),
            kind => (Storage::Policy, model.is_matmul_weight(kind)),
        };
        PlannedParams {
            source: ParamSource::Base { param },
            numel: p.numel,
            count: p.count,
            trainable,
            origin: ParamOrigin::Base,
            storage,
            matmul_weight,
        }
    }
}

/// The dtype an activation term is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationDtype {
    /// The compute dtype of the precision policy (16-bit under autocast).
    Compute,
    Dense(DType),
}

/// What an activation term a regime adds is (LoRA's `x A` comes with each [`AdapterSite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ActivationTermKind {
    /// DoRA's weight-sized temporaries.
    DoraWeightNorm { module: usize },
    /// QLoRA's dequantized weight.
    Dequantized { module: usize },
    /// Anything else, named.
    Other { name: &'static str },
}

/// Activation memory a regime adds: `per_token * batch * seq + fixed` elements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationTerm {
    pub kind: ActivationTermKind,
    pub per_token: u64,
    pub fixed: u64,
    pub dtype: ActivationDtype,
}

/// What a regime decides for one model: a [`BaseTreatment`] for the base model's parameters,
/// [`AdapterSite`]s, further parameter groups (`modules_to_save` copies, or base parameters
/// planned one by one) and further activation terms. Every push keeps running [`PlanTotals`], so
/// counting and the memory model cost the same whatever the model's depth. Planning costs one
/// step for the base (from the shape's [`crate::ParamSums`]), one for a whole adapter group
/// (from its [`crate::GroupAdapterUnits`]) or one per adapted module kind otherwise.
///
/// A plan describes one model: every push takes the model its indices refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrainingPlan {
    base: Option<BaseTreatment>,
    adapters: Vec<AdapterSite>,
    groups: Vec<PlannedParams>,
    activation_terms: Vec<ActivationTerm>,
    #[serde(skip)]
    totals: PlanTotals,
}

/// Running sums over a plan: everything the counts and the memory model need, independent of the
/// memory settings. A sum that would overflow `u64` sets `overflow` instead, and every figure read
/// from the plan then fails with a [`CountError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanTotals {
    pub trainable_params: u64,
    pub frozen_params: u64,
    /// Parameters of the base model (origin [`ParamOrigin::Base`]).
    pub base_params: u64,
    /// Trainable tensors (the optimizer keeps a `step` per tensor).
    pub trainable_tensors: u64,
    /// Elements with a fixed storage (dense dtype or NF4), trainable and frozen; the rest are
    /// stored as the precision policy says.
    pub trainable_fixed_elements: u64,
    pub frozen_fixed_elements: u64,
    /// Bytes of groups with a fixed storage (dense dtype or NF4).
    pub fixed_storage_bytes: u64,
    /// Elements of matmul weights stored as the policy says, trainable and frozen (what autocast
    /// casts when the policy dtype is not the compute dtype), each with the part in the first
    /// block's attention-input projections ([`first_block_elements`]).
    pub trainable_matmul: [u64; 2],
    pub frozen_matmul: [u64; 2],
    /// A matmul weight has a fixed dense storage: the memory model then looks at each group.
    pub dense_matmul: bool,
    /// Some base parameter is trained (so the embedding output needs a gradient).
    pub base_trainable: bool,
    /// An adapter sits on an attention Linear that does not read the block input (the output
    /// projection).
    pub adapts_attention_output: bool,
    /// Activation terms in the compute dtype, in elements: per token and fixed.
    pub compute_terms: [u64; 2],
    /// Activation terms in a fixed dtype, in bytes: per token and fixed.
    pub dense_term_bytes: [u64; 2],
    pub overflow: bool,
}

/// Elements of a matmul weight group that sit in the first block's q, k, v (or fused qkv), base
/// weights and LoRA A: with a frozen embedding nothing upstream of them needs a gradient, so
/// autocast does not save their 16-bit copies.
pub fn first_block_elements(model: &ModelShape, group: &PlannedParams) -> u64 {
    let module = match group.source {
        ParamSource::Base { param } => match model.params[param].kind {
            ParamKind::LinearWeight(i) => i,
            _ => return 0,
        },
        ParamSource::LoraA { module } => module,
        _ => return 0,
    };
    let first_block = model.modules[module].first_block_instances(model.dims.layers);
    group.numel.saturating_mul(group.count.min(first_block))
}

impl PlanTotals {
    #[inline(always)]
    fn add(&mut self, slot: fn(&mut PlanTotals) -> &mut u64, value: Option<u64>) {
        match value.and_then(|v| slot(self).checked_add(v)) {
            Some(sum) => *slot(self) = sum,
            None => self.overflow = true,
        }
    }

    /// Account for one parameter group, whatever its kind: the reference every faster path
    /// ([`TrainingPlan::set_base`], [`TrainingPlan::push_adapter`]) must agree with.
    pub fn add_group(&mut self, model: &ModelShape, group: &PlannedParams) {
        let n = group.numel.checked_mul(group.count);
        if group.trainable {
            self.add(|t| &mut t.trainable_params, n);
            self.add(|t| &mut t.trainable_tensors, Some(group.count));
            self.base_trainable |= group.origin == ParamOrigin::Base;
        } else {
            self.add(|t| &mut t.frozen_params, n);
        }
        if group.origin == ParamOrigin::Base {
            self.add(|t| &mut t.base_params, n);
        }
        let first_block = Some(first_block_elements(model, group));
        match group.storage {
            Storage::Policy if group.trainable => {
                if group.matmul_weight {
                    self.add(|t| &mut t.trainable_matmul[0], n);
                    self.add(|t| &mut t.trainable_matmul[1], first_block);
                }
            }
            Storage::Policy => {
                if group.matmul_weight {
                    self.add(|t| &mut t.frozen_matmul[0], n);
                    self.add(|t| &mut t.frozen_matmul[1], first_block);
                }
            }
            Storage::Dense { dtype } => {
                self.add_fixed(group.trainable, n);
                let bytes = n.and_then(|n| n.checked_mul(dtype.bytes()));
                self.add(|t| &mut t.fixed_storage_bytes, bytes);
                self.dense_matmul |= group.matmul_weight;
            }
            Storage::Nf4(layout) => {
                self.add_fixed(group.trainable, n);
                let bytes = group.count.checked_mul(layout.tensor_bytes(group.numel));
                self.add(|t| &mut t.fixed_storage_bytes, bytes);
            }
        }
    }

    fn add_fixed(&mut self, trainable: bool, elements: Option<u64>) {
        if trainable {
            self.add(|t| &mut t.trainable_fixed_elements, elements);
        } else {
            self.add(|t| &mut t.frozen_fixed_elements, elements);
        }
    }

    /// Account for one activation term.
    pub fn add_activation_term(&mut self, term: &ActivationTerm) {
        let (slot, scale): (fn(&mut PlanTotals) -> &mut [u64; 2], u64) = match term.dtype {
            ActivationDtype::Compute => (|t| &mut t.compute_terms, 1),
            ActivationDtype::Dense(dtype) => (|t| &mut t.dense_term_bytes, dtype.bytes()),
        };
        for (i, v) in [term.per_token, term.fixed].into_iter().enumerate() {
            match v
                .checked_mul(scale)
                .and_then(|v| slot(self)[i].checked_add(v))
            {
                Some(sum) => slot(self)[i] = sum,
                None => self.overflow = true,
            }
        }
    }
}

fn sum(what: &'static str, total: u64, overflow: bool) -> Result<u64, CountError> {
    if overflow {
        Err(CountError { what })
    } else {
        Ok(total)
    }
}

impl TrainingPlan {
    /// Empty the plan, keeping its allocations (for sweeps that plan millions of times).
    pub fn clear(&mut self) {
        self.base = None;
        self.adapters.clear();
        self.groups.clear();
        self.activation_terms.clear();
        self.totals = PlanTotals::default();
    }

    /// Plan every base parameter of `model` by one rule. At most once per plan; base parameters
    /// that need different rules are pushed one by one with [`TrainingPlan::push_group`] instead.
    pub fn set_base(&mut self, model: &ModelShape, base: BaseTreatment) {
        debug_assert!(self.base.is_none(), "set_base called twice on one plan");
        let sums = &model.sums;
        let (trained, trained_tensors) = match base.training {
            BaseTraining::Frozen => (0, 0),
            BaseTraining::All => (sums.params, sums.tensors),
            BaseTraining::Biases => (sums.bias_params, sums.bias_tensors),
        };
        let frozen = sums.params - trained;
        let t = &mut self.totals;
        t.add(|t| &mut t.trainable_params, Some(trained));
        t.add(|t| &mut t.trainable_tensors, Some(trained_tensors));
        t.add(|t| &mut t.frozen_params, Some(frozen));
        t.add(|t| &mut t.base_params, Some(sums.params));
        t.base_trainable |= trained > 0;
        // Matmul weights: every Linear weight and a tied embedding; biases never are. Block
        // Linears (all the first block's q, k, v among them) may have their own storage.
        let (matmul_all, matmul_first) = (sums.matmul_params, sums.first_block_attention_params);
        let (policy_matmul, policy_first, moved) = match base.block_linear_storage {
            Storage::Policy => (matmul_all, matmul_first, 0),
            _ => (
                matmul_all - sums.block_linear_params,
                0,
                sums.block_linear_params,
            ),
        };
        let trained_matmul = base.training == BaseTraining::All;
        t.add_fixed(trained_matmul, Some(moved));
        let matmul = if trained_matmul {
            &mut t.trainable_matmul
        } else {
            &mut t.frozen_matmul
        };
        let mut overflow = false;
        for (slot, v) in matmul.iter_mut().zip([policy_matmul, policy_first]) {
            match slot.checked_add(v) {
                Some(sum) => *slot = sum,
                None => overflow = true,
            }
        }
        t.overflow |= overflow;
        match base.block_linear_storage {
            Storage::Policy => {}
            Storage::Dense { dtype } => {
                let bytes = sums.block_linear_params.checked_mul(dtype.bytes());
                t.add(|t| &mut t.fixed_storage_bytes, bytes);
                t.dense_matmul |= sums.block_linear_params > 0;
            }
            Storage::Nf4(layout) => {
                // Each tensor has its own absmax blocks and codebooks: one term per kind.
                for p in &model.params {
                    if let ParamKind::LinearWeight(i) = p.kind
                        && model.modules[i].in_blocks()
                    {
                        let bytes = p.count.checked_mul(layout.tensor_bytes(p.numel));
                        t.add(|t| &mut t.fixed_storage_bytes, bytes);
                    }
                }
            }
        }
        self.base = Some(base);
    }

    /// Add a parameter group planned for `model` (its `source` indexes `model`).
    pub fn push_group(&mut self, model: &ModelShape, group: PlannedParams) {
        self.totals.add_group(model, &group);
        self.groups.push(group);
    }

    /// Add an adapter on `model.modules[site.module]`: its parameter groups and its `x A`.
    /// Fails, naming the size, when one of its tensors has more than `u64::MAX` elements.
    #[inline(always)]
    pub fn push_adapter(
        &mut self,
        model: &ModelShape,
        site: AdapterSite,
    ) -> Result<(), CountError> {
        let m = &model.modules[site.module];
        let units = m.adapter_units;
        let extra = u64::from(site.lora_bias) + u64::from(site.dora);
        let r = site.rank;
        let (elements, matmul, saved, first_block) = if r <= units.max_rank {
            // Below max_rank none of these products can overflow (see AdapterUnits).
            let ab = r * units.in_plus_out_count;
            (
                Some(ab + extra * units.out_count),
                Some(ab),
                r * m.count,
                Some(r * units.first_block_in),
            )
        } else {
            // A rank this large may still fit; check every size, naming the first too large.
            let size = |what: &'static str, v: Option<u64>| v.ok_or(CountError { what });
            let a = size("lora_A size", r.checked_mul(m.in_features))?;
            size("lora_B size", r.checked_mul(m.out_features))?;
            let saved = size("activation size", r.checked_mul(m.count))?;
            let ab = r.checked_mul(units.in_plus_out_count);
            let extras = extra.checked_mul(units.out_count);
            let elements = ab.zip(extras).and_then(|(ab, e)| ab.checked_add(e));
            let first_block = m.first_block_instances(model.dims.layers);
            (elements, ab, saved, a.checked_mul(first_block))
        };
        let t = &mut self.totals;
        t.add(|t| &mut t.trainable_params, elements);
        t.add(|t| &mut t.trainable_tensors, Some(m.count * (2 + extra)));
        t.add(|t| &mut t.trainable_matmul[0], matmul);
        t.add(|t| &mut t.trainable_matmul[1], first_block);
        t.add(|t| &mut t.compute_terms[0], Some(saved));
        t.adapts_attention_output |= m.group == ModuleGroup::Attention && !m.reads_attention_input;
        self.adapters.push(site);
        Ok(())
    }

    /// Add a rank-`rank` adapter on every module of a target group in one step, from the sums
    /// the shape precomputed. Returns `false`, adding nothing, when the group holds a parameter
    /// host (whose rank differs) or `rank` is past the group's `max_rank`: push those adapters
    /// one by one with [`TrainingPlan::push_adapter`].
    pub fn try_push_group_adapters(
        &mut self,
        units: &GroupAdapterUnits,
        rank: u64,
        dora: bool,
        lora_bias: bool,
    ) -> bool {
        if !units.module_hosts_only || rank > units.max_rank {
            return false;
        }
        let mut modules = units.mask;
        while modules != 0 {
            let module = modules.trailing_zeros() as usize;
            modules &= modules - 1;
            self.adapters.push(AdapterSite {
                module,
                rank,
                dora,
                lora_bias,
            });
        }
        // Below max_rank none of these products can overflow (see GroupAdapterUnits).
        let extra = u64::from(lora_bias) + u64::from(dora);
        let ab = rank * units.in_plus_out_count;
        let t = &mut self.totals;
        t.add(
            |t| &mut t.trainable_params,
            Some(ab + extra * units.out_count),
        );
        t.add(
            |t| &mut t.trainable_tensors,
            Some(units.count * (2 + extra)),
        );
        t.add(|t| &mut t.trainable_matmul[0], Some(ab));
        t.add(
            |t| &mut t.trainable_matmul[1],
            Some(rank * units.first_block_in),
        );
        t.add(|t| &mut t.compute_terms[0], Some(rank * units.count));
        t.adapts_attention_output |= units.has_attention_output;
        true
    }

    /// Add activation memory the regime needs.
    pub fn push_activation_term(&mut self, term: ActivationTerm) {
        self.totals.add_activation_term(&term);
        self.activation_terms.push(term);
    }

    /// The adapted Linear modules.
    pub fn adapters(&self) -> &[AdapterSite] {
        &self.adapters
    }

    /// Activation terms pushed one by one (beyond the adapters' `x A`).
    pub fn activation_terms(&self) -> &[ActivationTerm] {
        &self.activation_terms
    }

    pub fn totals(&self) -> &PlanTotals {
        &self.totals
    }

    /// Every parameter group of the plan on `model`: the base treatment's (one per base
    /// parameter), each adapter's, then the extra groups.
    pub fn groups<'a>(&'a self, model: &'a ModelShape) -> impl Iterator<Item = PlannedParams> + 'a {
        let base = self
            .base
            .iter()
            .flat_map(move |b| (0..model.params.len()).map(move |i| b.group(model, i)));
        base.chain(
            self.adapters
                .iter()
                .flat_map(move |site| site.groups(model)),
        )
        .chain(self.groups.iter().cloned())
    }

    /// The totals recomputed group by group through [`PlanTotals::add_group`] (the reference the
    /// running totals are tested against).
    pub fn recount(&self, model: &ModelShape) -> PlanTotals {
        let mut totals = PlanTotals::default();
        for g in self.groups(model) {
            totals.add_group(model, &g);
        }
        for site in &self.adapters {
            let m = &model.modules[site.module];
            totals.add_activation_term(&ActivationTerm {
                kind: ActivationTermKind::Other { name: "x A" },
                per_token: site.rank.saturating_mul(m.count),
                fixed: 0,
                dtype: ActivationDtype::Compute,
            });
            totals.adapts_attention_output |=
                m.group == ModuleGroup::Attention && !m.reads_attention_input;
        }
        for term in &self.activation_terms {
            totals.add_activation_term(term);
        }
        totals
    }

    /// Parameters updated by the optimizer.
    pub fn trainable_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        sum("trainable_params", t.trainable_params, t.overflow)
    }

    /// Parameters held but not updated.
    pub fn frozen_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        sum("frozen_params", t.frozen_params, t.overflow)
    }

    /// peft's `all params`: base model + adapters + `modules_to_save` copies, every tensor at its
    /// logical (unpacked) size.
    pub fn all_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        let all = t.trainable_params.checked_add(t.frozen_params);
        sum("all_params", all.unwrap_or(0), t.overflow || all.is_none())
    }

    /// The base model's own parameters.
    pub fn base_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        sum("base_params", t.base_params, t.overflow)
    }

    /// Parameters added by the regime (adapters and saved copies).
    pub fn added_params(&self) -> Result<u64, CountError> {
        Ok(self.all_params()? - self.base_params()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_base_treatment_matches_a_recount() {
        use crate::spec::TransformerSpec;
        // Biases, LayerNorm biases and an untied lm_head as well.
        let biased = TransformerSpec {
            qkv_bias: true,
            mlp_bias: true,
            tied_embeddings: false,
            norm: crate::shape::NormKind::LayerNorm { bias: true },
            ..TransformerSpec::minigpt()
        };
        for model in [
            TransformerSpec::minigpt().build().unwrap(),
            biased.build().unwrap(),
        ] {
            for training in [
                BaseTraining::Frozen,
                BaseTraining::All,
                BaseTraining::Biases,
            ] {
                for block_linear_storage in [
                    Storage::Policy,
                    Storage::Dense { dtype: DType::U8 },
                    Storage::Nf4(Nf4Layout::bitsandbytes(true)),
                ] {
                    let mut plan = TrainingPlan::default();
                    let base = BaseTreatment {
                        training,
                        block_linear_storage,
                    };
                    plan.set_base(&model, base);
                    assert_eq!(*plan.totals(), plan.recount(&model), "{base:?}");
                    assert_eq!(plan.groups(&model).count(), model.params.len());
                }
            }
        }
    }

    /// A legal but absurd module (2^26 x 2^26, once) puts huge ranks at and past the unchecked
    /// fast path: at its bound the figures are exact, past it a sum too large for u64 fails as a
    /// count error and a tensor too large is named.
    #[test]
    fn adapters_at_and_beyond_the_fast_path() {
        use crate::shape::{
            AttentionLayout, Dims, Family, LinearLayout, LinearModule, MlpLayout, ModelShape,
            ModuleGroup, NormKind, ParamGroup, PositionKind,
        };
        let side = 1u64 << 26;
        let model = ModelShape::from_parts(
            "wide",
            Family::new("custom"),
            Dims {
                hidden: 1,
                layers: 1,
                heads: 1,
                kv_heads: 1,
                head_dim: 1,
                intermediate: 1,
                vocab: 1,
                max_positions: 1,
            },
            crate::shape::Architecture {
                norm: NormKind::RmsNorm,
                attention: AttentionLayout::Separate,
                mlp: MlpLayout::Plain,
                positions: PositionKind::Rotary,
                block: crate::shape::BlockSpec::DECODER,
            },
            false,
            vec![LinearModule::new(
                "layers.*.mlp.down_proj",
                (side, side),
                false,
                1,
                LinearLayout::Linear,
                ModuleGroup::Mlp,
            )],
            vec![ParamGroup {
                name: "layers.*.mlp.down_proj.weight".into(),
                numel: side * side,
                count: 1,
                kind: ParamKind::LinearWeight(0),
            }],
        )
        .unwrap();
        let max_rank = model.modules[0].adapter_units.max_rank;
        // (2^64 - 1 - 2^27) / 2^27, by hand.
        assert_eq!(max_rank, (1 << 37) - 2);
        let site = AdapterSite {
            module: 0,
            rank: max_rank,
            dora: true,
            lora_bias: false,
        };
        let mut plan = TrainingPlan::default();
        plan.push_adapter(&model, site).unwrap();
        assert_eq!(plan.trainable_params().unwrap(), max_rank * 2 * side + side);
        assert_eq!(*plan.totals(), plan.recount(&model));

        // lora_A and lora_B fit, their sum does not.
        let mut plan = TrainingPlan::default();
        let past = AdapterSite {
            rank: (1 << 37) + 1,
            ..site
        };
        plan.push_adapter(&model, past).unwrap();
        assert!(plan.trainable_params().is_err());
        assert!(plan.recount(&model).overflow);

        let too_large = AdapterSite {
            rank: 1 << 38,
            ..site
        };
        assert_eq!(
            plan.push_adapter(&model, too_large).unwrap_err().what,
            "lora_A size"
        );
    }

    #[test]
    fn shift_division_rounds_up_like_div_ceil() {
        for d in [1u64, 2, 3, 64, 100, 256, 1 << 20] {
            for n in [
                0u64,
                1,
                63,
                64,
                65,
                4095,
                4096,
                4097,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(div_ceil(n, d), n.div_ceil(d), "{n} / {d}");
            }
        }
    }

    #[test]
    fn nf4_bytes_match_bitsandbytes_for_64x64() {
        // shared/fixtures/nf4_bytes.json: 64x64, blocksize 64.
        assert_eq!(Nf4Layout::bitsandbytes(false).tensor_bytes(4096), 2368);
        assert_eq!(Nf4Layout::bitsandbytes(true).tensor_bytes(4096), 3208);
    }
}

//! Model shapes: the named Linear modules and parameter groups of a decoder-only transformer.
//!
//! A shape is built from a [`TransformerSpec`] (the fields of a Hugging Face `config.json`, already
//! resolved) or assembled directly from a tensor inventory (safetensors headers). Layers are kinds
//! with counts: `model.layers.*.self_attn.q_proj` appears once with `count = num_hidden_layers`, so
//! a 70B model is a handful of entries and an estimate costs nanoseconds.

use crate::error::ShapeError;
use serde::Serialize;

/// The implementation family: decides module names and, for activations, which operations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The course's MiniGPT (section A13): q/k/v/o + a plain two-Linear MLP.
    MiniGpt,
    Gpt2,
    Llama,
    Mistral,
    Qwen2,
    Gemma,
    Phi3,
    Mixtral,
    /// Assembled from a tensor inventory whose implementation is not known.
    Custom,
}

impl Family {
    pub const fn name(self) -> &'static str {
        match self {
            Family::MiniGpt => "minigpt",
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Gemma => "gemma",
            Family::Phi3 => "phi3",
            Family::Mixtral => "mixtral",
            Family::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// LayerNorm: weight and (if `bias`) bias, both `hidden` long.
    LayerNorm { bias: bool },
    /// RMSNorm: weight only.
    RmsNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PositionKind {
    /// A learned `max_positions x hidden` table (GPT-2's `wpe`).
    Learned,
    /// Rotary embeddings: no parameters.
    Rotary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionLayout {
    /// Separate q, k, v, o projections.
    Separate,
    /// One fused `qkv_proj` (Phi-3) or `c_attn` (GPT-2) and an output projection.
    FusedQkv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlpLayout {
    /// up -> act -> down.
    Plain,
    /// gate, up -> act(gate) * up -> down.
    Gated,
    /// One fused gate_up projection (Phi-3).
    FusedGated,
    /// Mixture of experts: a router and `experts` gated MLPs, `top_k` active per token.
    Experts { experts: u64, top_k: u64 },
}

/// How a Linear stores its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinearLayout {
    /// `torch.nn.Linear`: weight `[out, in]`.
    Linear,
    /// GPT-2's `Conv1D`: weight `[in, out]`.
    Conv1D,
}

/// Where a Linear sits; `attn` and `mlp` targets select by group, `all-linear` takes every group
/// except [`ModuleGroup::Output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleGroup {
    Attention,
    Mlp,
    Router,
    Output,
}

/// How peft attaches an adapter to a Linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterHost {
    /// An `nn.Linear` or `Conv1D` module, wrapped as a module (`lora.Linear`).
    Module,
    /// A parameter wrapped through peft's `target_parameters` (`lora.ParamWrapper`): the router
    /// and the fused 3-D expert weights of transformers-5 MoE models. `fused` original modules
    /// (Mixtral's `w1` and `w3` in `gate_up_proj`) share one adapter of rank `fused * r`; peft
    /// refuses DoRA and `lora_bias` here.
    Parameter { fused: u64 },
}

impl AdapterHost {
    /// The rank multiplier peft applies to this host.
    pub const fn rank_factor(self) -> u64 {
        match self {
            AdapterHost::Module => 1,
            AdapterHost::Parameter { fused } => fused,
        }
    }
}

/// One kind of Linear module, repeated `count` times (once per layer, or per layer and expert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinearModule {
    /// Module path with layer (and expert) indices replaced by `*`.
    pub path: String,
    /// The last path component (`q_proj`, `c_attn`), what peft's `target_modules` names match.
    pub name: String,
    pub in_features: u64,
    pub out_features: u64,
    pub bias: bool,
    pub count: u64,
    pub layout: LinearLayout,
    pub group: ModuleGroup,
    /// The weight is shared with the input embedding (a tied lm_head): no parameter of its own.
    pub weight_tied: bool,
    pub host: AdapterHost,
    /// The names peft's `target_modules` use to select this module. Usually just `name`; a fused
    /// expert weight lists the modules it was fused from (`w1`, `w3`), all of which must be named.
    pub target_names: Vec<String>,
    /// Reads the block's normalized input to attention (q, k, v or a fused qkv): the matmuls whose
    /// input needs no gradient in the first block when the embedding is frozen. Set by
    /// [`LinearModule::new`] from the name and group.
    pub reads_attention_input: bool,
    /// Per-instance figures an adapter on this module scales by its rank, filled in by
    /// [`ModelShape::from_parts`].
    pub adapter_units: AdapterUnits,
}

/// What a rank-`r` adapter on one module kind costs, per unit of rank, precomputed so that
/// planning an adapter is a few multiplications without overflow checks: below `max_rank` none of
/// them can overflow `u64`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdapterUnits {
    /// `(in + out) x count`: lora_A and lora_B elements per unit of rank.
    pub in_plus_out_count: u64,
    /// `out x count`: a lora_B bias or a DoRA magnitude.
    pub out_count: u64,
    /// `in x` the instances in the first block, when the module reads the attention input
    /// (lora_A elements per unit of rank whose autocast copy a frozen embedding spares).
    pub first_block_in: u64,
    /// The largest rank for which `rank x in_plus_out_count + 2 x out_count` fits in `u64`.
    pub max_rank: u64,
}

impl AdapterUnits {
    /// The units of `module` in a model of `layers` layers (sizes already checked against
    /// [`MAX_TOTAL_PARAMS`], so nothing here overflows).
    pub fn of(module: &LinearModule, layers: u64) -> Self {
        let m = module;
        let in_plus_out_count = (m.in_features + m.out_features) * m.count;
        let out_count = m.out_features * m.count;
        let first_block_in = m.in_features * m.first_block_instances(layers);
        AdapterUnits {
            in_plus_out_count,
            out_count,
            first_block_in,
            max_rank: (u64::MAX - 2 * out_count) / in_plus_out_count.max(1),
        }
    }
}

/// The names of Linears that read the attention block's normalized input.
const ATTENTION_INPUT_NAMES: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "c_attn",
    "qkv_proj",
    "query_key_value",
    "Wqkv",
];

impl LinearModule {
    /// An `nn.Linear`-like module named by the last component of `path`.
    pub fn new(
        path: impl Into<String>,
        (in_features, out_features): (u64, u64),
        bias: bool,
        count: u64,
        layout: LinearLayout,
        group: ModuleGroup,
    ) -> Self {
        let path = path.into();
        let name = path.rsplit('.').next().unwrap_or(&path).to_string();
        LinearModule {
            adapter_units: AdapterUnits::default(),
            reads_attention_input: group == ModuleGroup::Attention
                && ATTENTION_INPUT_NAMES.contains(&name.as_str()),
            target_names: vec![name.clone()],
            name,
            path,
            in_features,
            out_features,
            bias,
            count,
            layout,
            group,
            weight_tied: false,
            host: AdapterHost::Module,
        }
    }

    pub fn weight_numel(&self) -> u64 {
        self.in_features * self.out_features
    }

    /// Instances of this module in the first block that read the block's attention input (q, k,
    /// v or a fused qkv: `count / layers`), 0 for every other module. With a frozen embedding
    /// nothing upstream of them needs a gradient.
    pub fn first_block_instances(&self, layers: u64) -> u64 {
        if self.reads_attention_input {
            self.count / layers.max(1)
        } else {
            0
        }
    }

    /// True for Linears inside the transformer blocks (what QLoRA quantizes).
    pub fn in_blocks(&self) -> bool {
        self.group != ModuleGroup::Output
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "module")]
pub enum ParamKind {
    Embedding,
    PositionEmbedding,
    /// The weight of `modules[i]`.
    LinearWeight(usize),
    /// The bias of `modules[i]`.
    LinearBias(usize),
    NormWeight,
    NormBias,
    Other,
}

impl ParamKind {
    pub fn is_bias(self) -> bool {
        matches!(self, ParamKind::LinearBias(_) | ParamKind::NormBias)
    }
}

/// `count` parameter tensors of `numel` elements each, sharing a name pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamGroup {
    pub name: String,
    pub numel: u64,
    pub count: u64,
    pub kind: ParamKind,
}

impl ParamGroup {
    pub fn total(&self) -> u64 {
        self.numel * self.count
    }
}

/// The resolved dimensions of a decoder-only transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dims {
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub intermediate: u64,
    pub vocab: u64,
    pub max_positions: u64,
}

/// A model: dimensions, the architecture choices that matter for counting and activations, the
/// Linear modules and every parameter group. Invariant: the total parameter count and every
/// module's weight size fit in `u64` with room to spare (checked when the shape is built).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelShape {
    pub name: String,
    pub family: Family,
    pub dims: Dims,
    pub norm: NormKind,
    pub attention: AttentionLayout,
    pub mlp: MlpLayout,
    pub positions: PositionKind,
    pub tied_embeddings: bool,
    pub modules: Vec<LinearModule>,
    pub params: Vec<ParamGroup>,
    /// Sums over `params` that plans start from, computed by [`ModelShape::from_parts`] (the
    /// one constructor). A shape is not edited after construction.
    pub sums: ParamSums,
    /// The adapter units of `all-linear`, `attn` and `mlp` summed over their modules (in that
    /// order), computed by [`ModelShape::from_parts`]; `None` past 128 module kinds.
    pub group_adapter_units: Option<[GroupAdapterUnits; 3]>,
}

/// What a rank-`r` adapter on every module of a target group costs per unit of rank: the sums of
/// the modules' [`AdapterUnits`], so that adapting a whole group is one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupAdapterUnits {
    /// Bit `i` set: `modules[i]` is in the group.
    pub mask: u128,
    pub in_plus_out_count: u64,
    pub out_count: u64,
    pub first_block_in: u64,
    /// Module instances in the group.
    pub count: u64,
    /// The largest rank for which `rank x in_plus_out_count + 2 x out_count` fits in `u64` (and
    /// with it every per-module size).
    pub max_rank: u64,
    /// Every module of the group is an `nn.Linear`-like host (rank factor 1, DoRA allowed).
    pub module_hosts_only: bool,
    /// The group holds an attention Linear that does not read the block input.
    pub has_attention_output: bool,
}

impl GroupAdapterUnits {
    /// The sums over the modules `spec` selects (at most 128 of them, sizes already checked, so
    /// nothing here overflows).
    fn of(modules: &[LinearModule], spec: &crate::TargetSpec) -> Self {
        let mut g = GroupAdapterUnits {
            module_hosts_only: true,
            ..GroupAdapterUnits::default()
        };
        for (i, m) in modules.iter().enumerate().filter(|(_, m)| spec.selects(m)) {
            let u = m.adapter_units;
            g.mask |= 1 << i;
            g.in_plus_out_count += u.in_plus_out_count;
            g.out_count += u.out_count;
            g.first_block_in += u.first_block_in;
            g.count += m.count;
            g.module_hosts_only &= m.host == AdapterHost::Module;
            g.has_attention_output |= m.group == ModuleGroup::Attention && !m.reads_attention_input;
        }
        g.max_rank = (u64::MAX - 2 * g.out_count) / g.in_plus_out_count.max(1);
        g
    }
}

/// Sums over a shape's parameters, so that a regime's treatment of the whole base model costs
/// one step (see `TrainingPlan::set_base`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParamSums {
    /// Every parameter (each tied tensor once) and tensor.
    pub params: u64,
    pub tensors: u64,
    /// Biases, norm biases included.
    pub bias_params: u64,
    pub bias_tensors: u64,
    /// Weights a matmul consumes: every Linear weight, and the embedding when the lm_head is tied.
    pub matmul_params: u64,
    /// Linear weights inside the blocks (what QLoRA quantizes).
    pub block_linear_params: u64,
    /// The first block's attention-input weights (q, k, v or fused qkv).
    pub first_block_attention_params: u64,
}

impl ParamSums {
    /// The sums of `shape` (whose totals are already checked against [`MAX_TOTAL_PARAMS`]).
    pub fn of(shape: &ModelShape) -> Self {
        let mut sums = ParamSums::default();
        let layers = shape.dims.layers.max(1);
        for p in &shape.params {
            let n = p.numel * p.count;
            sums.params += n;
            sums.tensors += p.count;
            if p.kind.is_bias() {
                sums.bias_params += n;
                sums.bias_tensors += p.count;
            }
            if shape.is_matmul_weight(p.kind) {
                sums.matmul_params += n;
            }
            if let ParamKind::LinearWeight(i) = p.kind {
                let m = &shape.modules[i];
                if m.in_blocks() {
                    sums.block_linear_params += n;
                }
                sums.first_block_attention_params +=
                    p.numel * p.count.min(m.first_block_instances(layers));
            }
        }
        sums
    }
}

/// The largest parameter total a shape may have: leaves headroom so that byte counts
/// (a few dozen bytes per parameter, summed over a few regimes) stay exact in `u64`.
pub const MAX_TOTAL_PARAMS: u128 = 1 << 52;

impl ModelShape {
    /// Every parameter, each tied tensor once (what `model.num_parameters()` reports).
    pub fn total_params(&self) -> u64 {
        self.sums.params
    }

    /// The precomputed adapter units of a group target (`all-linear`, `attn`, `mlp`); `None`
    /// for names and past 128 module kinds.
    pub fn group_adapter_units(&self, spec: &crate::TargetSpec) -> Option<&GroupAdapterUnits> {
        let index = match spec {
            crate::TargetSpec::AllLinear => 0,
            crate::TargetSpec::Attention => 1,
            crate::TargetSpec::Mlp => 2,
            crate::TargetSpec::Names(_) => return None,
        };
        self.group_adapter_units.as_ref().map(|units| &units[index])
    }

    /// Weights that a matmul consumes (Linear weights, and the embedding when the lm_head is
    /// tied).
    pub fn is_matmul_weight(&self, kind: ParamKind) -> bool {
        match kind {
            ParamKind::LinearWeight(_) => true,
            ParamKind::Embedding => self.tied_embeddings,
            _ => false,
        }
    }

    /// The longest sequence the model can take: the size of a learned position table (GPT-2's
    /// `n_positions`); `None` for rotary positions, which have no table.
    pub fn position_limit(&self) -> Option<u64> {
        match self.positions {
            PositionKind::Learned => Some(self.dims.max_positions),
            PositionKind::Rotary => None,
        }
    }

    /// An error naming `flag` when `seq` is longer than [`ModelShape::position_limit`].
    pub fn check_seq(&self, flag: &'static str, seq: u64) -> Result<(), ShapeError> {
        match self.position_limit() {
            Some(limit) if seq > limit => Err(ShapeError::Inconsistent {
                field: flag,
                reason: format!(
                    "{seq} tokens exceed {}'s learned position table (max_position_embeddings {limit})",
                    self.name
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Parameters of Linear weights inside the blocks (what LoRA papers call "the weights").
    pub fn block_linear_weight_params(&self) -> u64 {
        self.modules
            .iter()
            .filter(|m| m.in_blocks())
            .map(|m| m.weight_numel() * m.count)
            .sum()
    }

    /// Distinct module names (`q_proj`, `c_attn`, ...) in declaration order.
    pub fn module_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.modules.iter().flat_map(|m| &m.target_names) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }

    /// Assemble a shape from explicit modules and parameter groups (used for tensor inventories),
    /// checking sizes and overflow.
    pub fn from_parts(
        name: impl Into<String>,
        family: Family,
        dims: Dims,
        arch: (NormKind, AttentionLayout, MlpLayout, PositionKind),
        tied_embeddings: bool,
        modules: Vec<LinearModule>,
        params: Vec<ParamGroup>,
    ) -> Result<Self, ShapeError> {
        let mut shape = ModelShape {
            sums: ParamSums::default(),
            group_adapter_units: None,
            name: name.into(),
            family,
            dims,
            norm: arch.0,
            attention: arch.1,
            mlp: arch.2,
            positions: arch.3,
            tied_embeddings,
            modules,
            params,
        };
        shape.check_totals()?;
        shape.sums = ParamSums::of(&shape);
        let layers = shape.dims.layers;
        for m in &mut shape.modules {
            m.adapter_units = AdapterUnits::of(m, layers);
        }
        if shape.modules.len() <= 128 {
            use crate::TargetSpec::{AllLinear, Attention, Mlp};
            shape.group_adapter_units = Some(
                [AllLinear, Attention, Mlp]
                    .map(|spec| GroupAdapterUnits::of(&shape.modules, &spec)),
            );
        }
        Ok(shape)
    }

    fn check_totals(&self) -> Result<(), ShapeError> {
        let mut total: u128 = 0;
        for p in &self.params {
            if p.numel == 0 || p.count == 0 {
                return Err(ShapeError::Inconsistent {
                    field: "params",
                    reason: format!("tensor `{}` has no elements", p.name),
                });
            }
            total += u128::from(p.numel) * u128::from(p.count);
            if total > MAX_TOTAL_PARAMS {
                return Err(ShapeError::Overflow { field: "params" });
            }
        }
        for m in &self.modules {
            let w = u128::from(m.in_features) * u128::from(m.out_features) * u128::from(m.count);
            if w > MAX_TOTAL_PARAMS {
                return Err(ShapeError::Overflow { field: "modules" });
            }
        }
        Ok(())
    }
}

/// The resolved fields of a model config, before expansion into modules and parameters.
/// `kv_heads` and `head_dim` default to `heads` and `hidden / heads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransformerSpec {
    pub name: String,
    pub family: Family,
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub intermediate: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    /// Bias on q, k, v (and o, unless `o_bias` says otherwise).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub norm: NormKind,
    pub positions: PositionKind,
    pub attention: AttentionLayout,
    pub mlp: MlpLayout,
}

fn nonzero(field: &'static str, value: u64) -> Result<u64, ShapeError> {
    if value == 0 {
        Err(ShapeError::Zero { field, value })
    } else {
        Ok(value)
    }
}

/// Checked product for shape fields; the limit keeps later byte arithmetic exact.
fn product(field: &'static str, factors: &[u64]) -> Result<u64, ShapeError> {
    let mut acc: u128 = 1;
    for &f in factors {
        acc *= u128::from(f);
        if acc > MAX_TOTAL_PARAMS {
            return Err(ShapeError::Overflow { field });
        }
    }
    Ok(acc as u64)
}

impl TransformerSpec {
    /// The course's MiniGPT, section-A13 defaults: n_layer 4, n_head 4, d_model 64, d_ff 256,
    /// vocab 512, tied embedding/lm_head, RoPE, no biases, RMSNorm.
    pub fn minigpt() -> Self {
        TransformerSpec {
            name: "minigpt".into(),
            family: Family::MiniGpt,
            hidden: 64,
            layers: 4,
            heads: 4,
            kv_heads: None,
            head_dim: None,
            intermediate: 256,
            vocab: 512,
            max_positions: 32,
            tied_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            norm: NormKind::RmsNorm,
            positions: PositionKind::Rotary,
            attention: AttentionLayout::Separate,
            mlp: MlpLayout::Plain,
        }
    }

    /// Expand into modules and parameter groups, validating every dimension.
    pub fn build(&self) -> Result<ModelShape, ShapeError> {
        let hidden = nonzero("hidden_size", self.hidden)?;
        let layers = nonzero("num_hidden_layers", self.layers)?;
        let heads = nonzero("num_attention_heads", self.heads)?;
        let intermediate = nonzero("intermediate_size", self.intermediate)?;
        let vocab = nonzero("vocab_size", self.vocab)?;
        let kv_heads = nonzero("num_key_value_heads", self.kv_heads.unwrap_or(heads))?;
        if heads % kv_heads != 0 {
            return Err(ShapeError::Inconsistent {
                field: "num_key_value_heads",
                reason: format!("{kv_heads} does not divide num_attention_heads {heads}"),
            });
        }
        let head_dim = match self.head_dim {
            Some(d) => nonzero("head_dim", d)?,
            None => {
                if hidden % heads != 0 {
                    return Err(ShapeError::Inconsistent {
                        field: "num_attention_heads",
                        reason: format!(
                            "{heads} does not divide hidden_size {hidden} and no head_dim is given"
                        ),
                    });
                }
                hidden / heads
            }
        };
        let max_positions = match self.positions {
            PositionKind::Learned => nonzero("max_position_embeddings", self.max_positions)?,
            PositionKind::Rotary => self.max_positions,
        };
        // Guard every product used below.
        product("hidden_size", &[vocab, hidden])?;
        product("max_position_embeddings", &[max_positions, hidden])?;
        let q_out = product("num_attention_heads", &[heads, head_dim])?;
        let kv_out = product("num_key_value_heads", &[kv_heads, head_dim])?;
        product("hidden_size", &[hidden, q_out, layers])?;
        product("intermediate_size", &[hidden, intermediate, layers, 3])?;
        if let MlpLayout::Experts { experts, top_k } = self.mlp {
            nonzero("num_local_experts", experts)?;
            nonzero("num_experts_per_tok", top_k)?;
            if top_k > experts {
                return Err(ShapeError::Inconsistent {
                    field: "num_experts_per_tok",
                    reason: format!("{top_k} is more than num_local_experts {experts}"),
                });
            }
            product(
                "num_local_experts",
                &[hidden, intermediate, layers, 3, experts],
            )?;
        }

        let mut b = ShapeAssembler::default();
        let dims = Dims {
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab,
            max_positions,
        };
        let (embed_name, pos_name, layer_prefix, final_norm) = match self.family {
            Family::Gpt2 => (
                "transformer.wte.weight",
                "transformer.wpe.weight",
                "transformer.h.*",
                "transformer.ln_f",
            ),
            _ => (
                "model.embed_tokens.weight",
                "model.embed_positions.weight",
                "model.layers.*",
                "model.norm",
            ),
        };
        b.param(embed_name, vocab * hidden, 1, ParamKind::Embedding);
        if self.positions == PositionKind::Learned {
            b.param(
                pos_name,
                max_positions * hidden,
                1,
                ParamKind::PositionEmbedding,
            );
        }
        let norm = |b: &mut ShapeAssembler, path: &str, count: u64| {
            b.param(
                &format!("{path}.weight"),
                hidden,
                count,
                ParamKind::NormWeight,
            );
            if let NormKind::LayerNorm { bias: true } = self.norm {
                b.param(&format!("{path}.bias"), hidden, count, ParamKind::NormBias);
            }
        };

        if self.family == Family::Gpt2 {
            let p = layer_prefix;
            let conv = LinearLayout::Conv1D;
            norm(&mut b, &format!("{p}.ln_1"), layers);
            b.linear(
                &format!("{p}.attn.c_attn"),
                hidden,
                q_out + 2 * kv_out,
                self.qkv_bias,
                layers,
                conv,
                ModuleGroup::Attention,
            );
            b.linear(
                &format!("{p}.attn.c_proj"),
                q_out,
                hidden,
                self.o_bias,
                layers,
                conv,
                ModuleGroup::Attention,
            );
            norm(&mut b, &format!("{p}.ln_2"), layers);
            b.linear(
                &format!("{p}.mlp.c_fc"),
                hidden,
                intermediate,
                self.mlp_bias,
                layers,
                conv,
                ModuleGroup::Mlp,
            );
            b.linear(
                &format!("{p}.mlp.c_proj"),
                intermediate,
                hidden,
                self.mlp_bias,
                layers,
                conv,
                ModuleGroup::Mlp,
            );
        } else {
            let p = layer_prefix;
            let lin = LinearLayout::Linear;
            let attn = if self.family == Family::MiniGpt {
                "attn"
            } else {
                "self_attn"
            };
            norm(&mut b, &format!("{p}.input_layernorm"), layers);
            match self.attention {
                AttentionLayout::Separate => {
                    b.linear(
                        &format!("{p}.{attn}.q_proj"),
                        hidden,
                        q_out,
                        self.qkv_bias,
                        layers,
                        lin,
                        ModuleGroup::Attention,
                    );
                    b.linear(
                        &format!("{p}.{attn}.k_proj"),
                        hidden,
                        kv_out,
                        self.qkv_bias,
                        layers,
                        lin,
                        ModuleGroup::Attention,
                    );
                    b.linear(
                        &format!("{p}.{attn}.v_proj"),
                        hidden,
                        kv_out,
                        self.qkv_bias,
                        layers,
                        lin,
                        ModuleGroup::Attention,
                    );
                }
                AttentionLayout::FusedQkv => {
                    b.linear(
                        &format!("{p}.{attn}.qkv_proj"),
                        hidden,
                        q_out + 2 * kv_out,
                        self.qkv_bias,
                        layers,
                        lin,
                        ModuleGroup::Attention,
                    );
                }
            }
            b.linear(
                &format!("{p}.{attn}.o_proj"),
                q_out,
                hidden,
                self.o_bias,
                layers,
                lin,
                ModuleGroup::Attention,
            );
            norm(&mut b, &format!("{p}.post_attention_layernorm"), layers);
            let m = format!("{p}.mlp");
            let bias = self.mlp_bias;
            match self.mlp {
                MlpLayout::Plain => {
                    b.linear(
                        &format!("{m}.up_proj"),
                        hidden,
                        intermediate,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                    b.linear(
                        &format!("{m}.down_proj"),
                        intermediate,
                        hidden,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                }
                MlpLayout::Gated => {
                    b.linear(
                        &format!("{m}.gate_proj"),
                        hidden,
                        intermediate,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                    b.linear(
                        &format!("{m}.up_proj"),
                        hidden,
                        intermediate,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                    b.linear(
                        &format!("{m}.down_proj"),
                        intermediate,
                        hidden,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                }
                MlpLayout::FusedGated => {
                    b.linear(
                        &format!("{m}.gate_up_proj"),
                        hidden,
                        2 * intermediate,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                    b.linear(
                        &format!("{m}.down_proj"),
                        intermediate,
                        hidden,
                        bias,
                        layers,
                        lin,
                        ModuleGroup::Mlp,
                    );
                }
                MlpLayout::Experts { experts, .. } => {
                    // transformers 5 layout, what peft wraps: a router module `gate` and the
                    // experts' weights as 3-D parameters, w1 and w3 fused into `gate_up_proj`.
                    let n = layers * experts;
                    let router = b.linear(
                        &format!("{m}.gate"),
                        hidden,
                        experts,
                        false,
                        layers,
                        lin,
                        ModuleGroup::Router,
                    );
                    b.modules[router].host = AdapterHost::Parameter { fused: 1 };
                    let gate_up = b.linear(
                        &format!("{m}.experts.gate_up_proj"),
                        hidden,
                        2 * intermediate,
                        bias,
                        n,
                        lin,
                        ModuleGroup::Mlp,
                    );
                    b.modules[gate_up].host = AdapterHost::Parameter { fused: 2 };
                    b.modules[gate_up].target_names = vec!["w1".into(), "w3".into()];
                    let down = b.linear(
                        &format!("{m}.experts.down_proj"),
                        intermediate,
                        hidden,
                        bias,
                        n,
                        lin,
                        ModuleGroup::Mlp,
                    );
                    b.modules[down].host = AdapterHost::Parameter { fused: 1 };
                    b.modules[down].target_names = vec!["w2".into()];
                }
            }
        }
        norm(&mut b, final_norm, 1);
        let lm_head = b.modules.len();
        b.linear_tied("lm_head", hidden, vocab, self.tied_embeddings);
        debug_assert_eq!(b.modules[lm_head].group, ModuleGroup::Output);

        ModelShape::from_parts(
            self.name.clone(),
            self.family,
            dims,
            (self.norm, self.attention, self.mlp, self.positions),
            self.tied_embeddings,
            b.modules,
            b.params,
        )
    }
}

#[derive(Default)]
struct ShapeAssembler {
    modules: Vec<LinearModule>,
    params: Vec<ParamGroup>,
}

impl ShapeAssembler {
    fn param(&mut self, name: &str, numel: u64, count: u64, kind: ParamKind) {
        self.params.push(ParamGroup {
            name: name.to_string(),
            numel,
            count,
            kind,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        path: &str,
        in_features: u64,
        out_features: u64,
        bias: bool,
        count: u64,
        layout: LinearLayout,
        group: ModuleGroup,
    ) -> usize {
        let index = self.modules.len();
        self.modules.push(LinearModule::new(
            path,
            (in_features, out_features),
            bias,
            count,
            layout,
            group,
        ));
        self.param(
            &format!("{path}.weight"),
            in_features * out_features,
            count,
            ParamKind::LinearWeight(index),
        );
        if bias {
            self.param(
                &format!("{path}.bias"),
                out_features,
                count,
                ParamKind::LinearBias(index),
            );
        }
        index
    }

    fn linear_tied(&mut self, path: &str, in_features: u64, out_features: u64, tied: bool) {
        if tied {
            self.modules.push(LinearModule {
                path: path.to_string(),
                name: path.to_string(),
                in_features,
                out_features,
                bias: false,
                count: 1,
                layout: LinearLayout::Linear,
                group: ModuleGroup::Output,
                weight_tied: true,
                host: AdapterHost::Module,
                target_names: vec![path.to_string()],
                reads_attention_input: false,
                adapter_units: AdapterUnits::default(),
            });
        } else {
            self.linear(
                path,
                in_features,
                out_features,
                false,
                1,
                LinearLayout::Linear,
                ModuleGroup::Output,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minigpt_linear_weights_per_layer_match_the_seed() {
        let shape = TransformerSpec::minigpt().build().unwrap();
        // Seed Block A: 4 * 64 * 64 + 64 * 256 + 256 * 64 = 49,152 per layer.
        assert_eq!(shape.block_linear_weight_params(), 4 * 49_152);
        // vocab 512 x 64 tied embedding, 2 RMSNorms per layer + final, no biases.
        assert_eq!(
            shape.total_params(),
            4 * 49_152 + 512 * 64 + (2 * 4 + 1) * 64
        );
    }

    #[test]
    fn llama_2_7b_has_its_published_parameter_count() {
        let spec = TransformerSpec {
            name: "llama-2-7b".into(),
            family: Family::Llama,
            hidden: 4096,
            layers: 32,
            heads: 32,
            kv_heads: Some(32),
            head_dim: None,
            intermediate: 11008,
            vocab: 32000,
            max_positions: 4096,
            tied_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            norm: NormKind::RmsNorm,
            positions: PositionKind::Rotary,
            attention: AttentionLayout::Separate,
            mlp: MlpLayout::Gated,
        };
        assert_eq!(spec.build().unwrap().total_params(), 6_738_415_616);
    }

    #[test]
    fn zero_and_indivisible_dimensions_are_named_errors() {
        let mut spec = TransformerSpec::minigpt();
        spec.hidden = 0;
        assert_eq!(
            spec.build().unwrap_err().to_string(),
            "hidden_size must be at least 1 (got 0)"
        );
        let mut spec = TransformerSpec::minigpt();
        spec.heads = 5;
        assert!(
            spec.build()
                .unwrap_err()
                .to_string()
                .starts_with("num_attention_heads")
        );
        let mut spec = TransformerSpec::minigpt();
        spec.hidden = 1 << 40;
        assert!(matches!(spec.build(), Err(ShapeError::Overflow { .. })));
    }

    /// transformers 5.24 `MixtralForCausalLM` (hidden 64, intermediate 96, 4 experts, 2 layers)
    /// has `mlp.gate.weight [4, 64]`, `mlp.experts.gate_up_proj [4, 192, 64]` and
    /// `mlp.experts.down_proj [4, 64, 96]` per layer: w1 and w3 are one fused parameter.
    #[test]
    fn mixtral_experts_follow_the_transformers_5_layout() {
        let mut spec = TransformerSpec::minigpt();
        spec.family = Family::Mixtral;
        spec.intermediate = 96;
        spec.layers = 2;
        spec.mlp = MlpLayout::Experts {
            experts: 4,
            top_k: 2,
        };
        let shape = spec.build().unwrap();
        let find = |name: &str| shape.modules.iter().find(|m| m.name == name).unwrap();
        let gate = find("gate");
        assert_eq!(
            (gate.in_features, gate.out_features, gate.count),
            (64, 4, 2)
        );
        let gate_up = find("gate_up_proj");
        assert_eq!(
            (gate_up.in_features, gate_up.out_features, gate_up.count),
            (64, 192, 8)
        );
        assert_eq!(gate_up.host, AdapterHost::Parameter { fused: 2 });
        assert_eq!(gate_up.target_names, ["w1", "w3"]);
        let down = find("down_proj");
        assert_eq!(
            (down.in_features, down.out_features, down.count),
            (96, 64, 8)
        );
        assert_eq!(down.target_names, ["w2"]);
    }
}

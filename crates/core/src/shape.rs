//! Model shapes: the named Linear modules and parameter groups of a decoder-only transformer.
//!
//! A shape is built from a [`TransformerSpec`] (the fields of a Hugging Face `config.json`, already
//! resolved) or assembled directly from a tensor inventory (safetensors headers). Layers are kinds
//! with counts: `model.layers.*.self_attn.q_proj` appears once with `count = num_hidden_layers`, so
//! a 70B model is a handful of entries and an estimate costs nanoseconds.

use crate::error::ShapeError;
use serde::Serialize;

/// The family a shape was read as (`llama`, `qwen3`, `gpt2`, or `custom` for a tensor inventory):
/// a label for reports. Behaviour never depends on it: what a block computes is its
/// [`BlockSpec`] and layouts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Family(std::borrow::Cow<'static, str>);

impl Family {
    /// A family named by a static string (family tables, presets).
    pub const fn new(name: &'static str) -> Self {
        Family(std::borrow::Cow::Borrowed(name))
    }

    /// A family named at run time (a `model_type` read from a file).
    pub fn owned(name: String) -> Self {
        Family(std::borrow::Cow::Owned(name))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// LayerNorm: weight and (if `bias`) bias, both `hidden` long.
    LayerNorm { bias: bool },
    /// RMSNorm: weight only.
    RmsNorm,
    /// LayerNorm without weight or bias (OLMo 1's `F.layer_norm(x, shape, None, None)`): no
    /// parameters; it keeps what LayerNorm keeps for backward.
    NonParametricLayerNorm,
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
    /// Multi-head latent attention (DeepSeek-V2/V3): low-rank query and key/value projections
    /// with their norms.
    Latent(LatentAttention),
}

/// The dimensions of multi-head latent attention (`q_lora_rank: None` projects queries
/// directly, as DeepSeek-V2-Lite does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatentAttention {
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

/// Norms of the queries and keys inside attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QkNorm {
    None,
    /// One norm of `head_dim` shared by every head (Qwen3, Gemma 3).
    HeadDim,
    /// One norm over all heads (`heads x head_dim`, and `kv_heads x head_dim` for keys: OLMo 2,
    /// Cohere).
    AllHeads,
    /// One `head_dim` norm tensor per head (StableLM's per-head LayerNorm).
    OneTensorPerHead,
}

/// Where a block's norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormPlacement {
    /// Before attention and before the MLP (LLaMA, GPT-2).
    Pre,
    /// Before and after each of attention and the MLP (Gemma 2/3, GLM-4).
    Sandwich,
    /// After attention and after the MLP only (OLMo 2).
    Post,
    /// Attention and MLP read the same normalized input (Phi, Falcon, Cohere, GPT-NeoX's
    /// parallel residual): one norm, or one per branch.
    Parallel,
}

/// Which per-operation activation recipe the memory model applies to a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationRecipe {
    /// transformers' GPT-2 (Conv1D, merged heads, its own sdpa path), measured.
    Gpt2,
    /// transformers' LLaMA-style decoder layer and its relatives, measured on llama, mistral and
    /// qwen2; the building blocks (q/k norms, extra norms, experts, latent attention) follow the
    /// same per-operation rules.
    Decoder,
    /// An architecture known only from its tensors: the decoder rules applied to the modules
    /// found, stated as an approximation wherever it is reported.
    Generic,
}

/// The building blocks of one transformer block, beyond its attention and MLP layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockSpec {
    /// Norms per block (1 to 4), named by the family's `Naming::block_norms`.
    pub norms: u8,
    pub norm_placement: NormPlacement,
    pub qk_norm: QkNorm,
    /// Dropout on the residual stream after attention and after the MLP (GPT-2, Phi-3).
    pub residual_dropout: bool,
    /// GPT-2's `Conv1D` Linears (weight `[in, out]`).
    pub conv1d: bool,
    /// gpt-oss's learned attention sinks: one parameter per head and layer.
    pub attention_sinks: bool,
    /// Rotary dimensions per head when only part of the head rotates (GPT-NeoX, Phi, StableLM);
    /// `None`: the whole head.
    pub rotary_dim: Option<u64>,
    /// Gemma 2's attention-logit soft-capping (eager attention saves the capped scores too).
    pub logit_softcap: bool,
    /// Soft-capping of the lm_head's logits (Gemma 2's `final_logit_softcapping`:
    /// `tanh(logits / cap) * cap`): tanh keeps its output, one more logits-sized tensor in the
    /// compute dtype.
    pub final_logit_softcap: bool,
    /// Sliding-window attention: the window and how many of the layers use it.
    pub sliding_window: Option<SlidingWindow>,
    /// What the MLP's activation function keeps for backward.
    pub mlp_activation: MlpActivation,
    pub recipe: ActivationRecipe,
}

/// The MLP activation function, by what it saves for backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlpActivation {
    /// One fused op (SiLU, exact GELU, `gelu_pytorch_tanh`, ReLU): keeps its input.
    Fused,
    /// transformers' `gelu_new` (`NewGELUActivation`, written out in Python ops): keeps four
    /// tensors of the MLP's width (measured on GPT-2 and Phi).
    GeluNewPython,
    /// gpt-oss's clamped SwiGLU (clamps, a scaled sigmoid and `(up + 1) * glu`): keeps five
    /// tensors of the expert width where SwiGLU keeps two (measured).
    ClampedSwiGlu,
}

/// Layers whose attention sees only the last `window` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlidingWindow {
    pub window: u64,
    pub layers: u64,
}

impl BlockSpec {
    /// A LLaMA-style decoder block: two pre-norms, no q/k norm.
    pub const DECODER: BlockSpec = BlockSpec {
        norms: 2,
        norm_placement: NormPlacement::Pre,
        qk_norm: QkNorm::None,
        residual_dropout: false,
        conv1d: false,
        attention_sinks: false,
        rotary_dim: None,
        logit_softcap: false,
        final_logit_softcap: false,
        sliding_window: None,
        mlp_activation: MlpActivation::Fused,
        recipe: ActivationRecipe::Decoder,
    };
}

/// The architecture choices a shape carries for the memory model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Architecture {
    pub norm: NormKind,
    pub attention: AttentionLayout,
    pub mlp: MlpLayout,
    pub positions: PositionKind,
    pub block: BlockSpec,
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
    /// Mixture of experts: a router and `experts` gated MLPs, `top_k` active per token, with
    /// optional shared experts and dense layers.
    Experts(ExpertsSpec),
}

/// A mixture-of-experts MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpertsSpec {
    pub experts: u64,
    pub top_k: u64,
    /// Each expert's MLP width (`moe_intermediate_size`).
    pub intermediate: u64,
    /// Layers with experts; the others have a dense gated MLP of the spec's `intermediate`
    /// (DeepSeek's `first_k_dense_replace`, Qwen's `mlp_only_layers`).
    pub sparse_layers: u64,
    /// Where the layers with a dense MLP and those with experts lie (`None` when there is
    /// none): a checkpointed backward peaks while it recomputes one of them ([`layer_spans`]).
    pub dense_span: Option<LayerSpan>,
    pub sparse_span: Option<LayerSpan>,
    pub layout: ExpertLayout,
    pub router_bias: bool,
    /// Group-limited routing (DeepSeek-V3's and GLM-4.5's `n_group`, `topk_group`): the router
    /// picks `topk_group` of `n_group` expert groups by their best two scores first, which
    /// saves the groups' top-2 indices, the chosen groups and a token-by-expert mask.
    pub routing_groups: Option<(u32, u32)>,
    pub shared: Option<SharedExperts>,
    /// How peft reaches the experts, when it does: transformers 5 fused them into 3-D
    /// parameters and peft 0.21 converts the transformers-4 target names of some model types
    /// (`peft/utils/transformers_weight_conversion.py`); other types' experts and routers are not
    /// adaptable (`all-linear` skips them).
    pub peft_targets: Option<ExpertTargets>,
}

/// The first and last index of the layers of one kind (dense MLP or experts), and how many layers
/// with experts follow each of them: what the gradients alive while the backward recomputes
/// either layer amount to (the later layers' gradients, which differ by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerSpan {
    pub first: u32,
    pub last: u32,
    /// Layers with experts after `first` and after `last`.
    pub sparse_after: [u32; 2],
}

impl LayerSpan {
    /// Every one of `layers` layers (at least one) has experts.
    pub const fn all_sparse(layers: u64) -> Self {
        let last = narrow(layers.saturating_sub(1));
        LayerSpan {
            first: 0,
            last,
            sparse_after: [last, 0],
        }
    }
}

/// A layer index or count as a span keeps it (a model has far fewer than `u32::MAX` layers; a
/// larger figure saturates).
const fn narrow(n: u64) -> u32 {
    if n > u32::MAX as u64 {
        u32::MAX
    } else {
        n as u32
    }
}

/// The spans of the `layers` for which `sparse` is false and of those for which it is true:
/// `[dense, sparse]` spans for [`ExpertsSpec`].
pub fn layer_spans(layers: u64, sparse: impl Fn(u64) -> bool) -> [Option<LayerSpan>; 2] {
    let mut spans: [Option<LayerSpan>; 2] = [None; 2];
    let sparse_from = |i: u64| narrow((i + 1..layers).filter(|&j| sparse(j)).count() as u64);
    for i in 0..layers {
        let span = &mut spans[usize::from(sparse(i))];
        *span = Some(match *span {
            None => LayerSpan {
                first: narrow(i),
                last: narrow(i),
                sparse_after: [sparse_from(i); 2],
            },
            Some(s) => LayerSpan {
                last: narrow(i),
                sparse_after: [s.sparse_after[0], sparse_from(i)],
                ..s
            },
        });
    }
    spans
}

/// Which of a model's layers a parameter sits in, for what differs between dense and expert
/// layers ([`ModelShape::param_layers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// Outside the blocks: embeddings, the final norm, the output head.
    Outside,
    /// Once in every block.
    Every,
    /// In the layers with a dense MLP of a mixture-of-experts model.
    Dense,
    /// In the layers with experts (router, experts, shared experts).
    Sparse,
}

/// The transformers-4 names peft converts into the fused experts' parameters. Every Linear module
/// with one of these names loses its adapter (peft moves the name from `target_modules` to
/// `target_parameters`): dense MLPs and shared experts named `gate_proj`, `up_proj`, `down_proj`
/// are not adapted on these models, `all-linear` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpertTargets {
    /// The router (`gate`).
    pub router: &'static str,
    /// The names fused into `gate_up_proj` (Mixtral's `w1`, `w3`; `gate_proj`, `up_proj`).
    pub gate_up: &'static [&'static str],
    /// The name of `down_proj` (`w2`, `down_proj`).
    pub down: &'static [&'static str],
}

/// How the experts' weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpertLayout {
    /// transformers 5: two 3-D parameters per layer, `gate_up_proj` `[E, 2I, H]` and `down_proj`
    /// `[E, H, I]`, with per-expert biases when `bias` (gpt-oss).
    Fused { bias: bool },
}

/// Experts every token passes through, beside the routed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SharedExperts {
    /// Their combined MLP width.
    pub intermediate: u64,
    /// A sigmoid gate `hidden -> 1` on their output (Qwen2-MoE).
    pub gate: bool,
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
    /// The layers it sits in: every block, but the output head (outside) and a
    /// mixture-of-experts model's dense MLPs and experts (set by the shape's builder).
    pub layers: LayerKind,
    /// The names peft's `target_modules` use to select this module. Usually just `name`; a fused
    /// expert weight lists the modules it was fused from (`w1`, `w3`), all of which must be named.
    pub target_names: Vec<String>,
    /// Reads the block's normalized input to attention (q, k, v or a fused qkv): the matmuls whose
    /// input needs no gradient in the first block when the embedding is frozen. Set by
    /// [`LinearModule::new`] from the name and group.
    pub reads_attention_input: bool,
    /// peft's `all-linear` takes this module (every Linear but the output layer, and parameters
    /// peft converts such as MoE experts; not a custom router module).
    pub in_all_linear: bool,
    /// Per-instance figures an adapter on this module scales by its rank, filled in by
    /// [`ModelShape::from_parts`].
    pub(crate) adapter_units: AdapterUnits,
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
    /// The block inputs an adapter on this module reads, for the activation model: what it adds
    /// to a plan's [`AdaptedInputs`] ([`AdaptedInputs::by`] keeps what the adapter's layout
    /// makes true).
    pub reads: AdaptedInputs,
}

/// The block's matmul inputs that a plan's adapters read ([`crate::plan::AdapterInput::Matmul`]),
/// summed as adapters are planned (a whole target group at once from its precomputed sum), so
/// the activation model reads them without walking the adapters. With a frozen base only these
/// inputs are saved (a plan adapting q and v saves the attention input, cast once per adapter
/// under autocast, and no MLP input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdaptedInputs {
    /// Adapters on the Linears reading the attention input (q, k, v, a fused qkv).
    pub attention: u64,
    /// Adapters on the MLP Linears reading the MLP input (gate, up, fc1). Adapted fused experts
    /// or routers add none (the experts' own term counts what they keep; counting every dense
    /// MLP input for them over-predicted qwen3_moe, deepseek_v3 and glm4_moe LoRA by up to 9.6%,
    /// whose dense MLP layers peft's all-linear leaves alone).
    pub mlp: u64,
    /// An adapter on an MLP Linear reading the intermediate activation (down, fc2).
    pub down: bool,
    /// Adapters on gate/up-like MLP Linears returning their input's dtype
    /// ([`crate::plan::AdapterOutput::InputDtype`]): under autocast their share of what the MLP
    /// keeps is fp32. Counted whatever the adapter's input. (In a module's or group's `reads`:
    /// the gate/up-like modules.)
    pub mlp_input_dtype_outputs: u64,
    /// Some block Linear is adapted so (latent attention's inner projections count on it).
    pub any: bool,
}

impl AdaptedInputs {
    /// What an adapter on `m` adds, in a model of hidden width `hidden`, when its own matmul
    /// reads the module input and it returns the input's dtype.
    fn of_reader(m: &LinearModule, hidden: u64) -> Self {
        let mut s = AdaptedInputs {
            any: true,
            mlp_input_dtype_outputs: u64::from(
                m.host == AdapterHost::Module
                    && m.group == ModuleGroup::Mlp
                    && m.in_features == hidden,
            ),
            ..AdaptedInputs::default()
        };
        if m.host != AdapterHost::Module {
            // A router or fused-expert parameter: the experts' term counts what it keeps.
        } else if m.reads_attention_input {
            s.attention = 1;
        } else if m.group == ModuleGroup::Mlp {
            // gate/up read the hidden width, down writes it (a square Linear, when the
            // intermediate width is the hidden one, counts as both).
            s.mlp = u64::from(m.in_features == hidden);
            s.down = m.out_features == hidden;
        }
        s
    }

    /// Both sums (saturating: `mlp` saturates at "every input").
    pub const fn plus(self, other: AdaptedInputs) -> AdaptedInputs {
        AdaptedInputs {
            attention: self.attention.saturating_add(other.attention),
            mlp: self.mlp.saturating_add(other.mlp),
            down: self.down | other.down,
            mlp_input_dtype_outputs: self
                .mlp_input_dtype_outputs
                .saturating_add(other.mlp_input_dtype_outputs),
            any: self.any | other.any,
        }
    }
}

impl AdapterUnits {
    /// The units of `module` in a model of `layers` layers and hidden width `hidden` (sizes
    /// already checked against [`MAX_TOTAL_PARAMS`], so nothing here overflows).
    pub fn of(module: &LinearModule, layers: u64, hidden: u64) -> Self {
        let m = module;
        let in_plus_out_count = (m.in_features + m.out_features) * m.count;
        let out_count = m.out_features * m.count;
        let first_block_in = m.in_features * m.first_block_instances(layers);
        AdapterUnits {
            in_plus_out_count,
            out_count,
            first_block_in,
            max_rank: (u64::MAX - 2 * out_count) / in_plus_out_count.max(1),
            reads: AdaptedInputs::of_reader(m, hidden),
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
    "q_a_proj",
    "kv_a_proj_with_mqa",
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
            in_all_linear: group != ModuleGroup::Output,
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
            layers: if group == ModuleGroup::Output {
                LayerKind::Outside
            } else {
                LayerKind::Every
            },
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

    /// True for Linears inside the transformer blocks.
    pub fn in_blocks(&self) -> bool {
        self.group != ModuleGroup::Output
    }

    /// transformers 5's fused 3-D expert weights (`gate_up_proj`, `down_proj` of an experts
    /// module): their grouped matmuls run outside autocast, in the weights' own dtype (the input
    /// is cast to it), so autocast never copies them.
    pub fn fused_experts(&self) -> bool {
        matches!(self.host, AdapterHost::Parameter { .. }) && self.group == ModuleGroup::Mlp
    }

    /// An `nn.Linear` inside the blocks: what bitsandbytes (and any `nn.Linear` swap) replaces
    /// with its 4-bit or 8-bit Linear. transformers 5's fused 3-D expert weights and its router
    /// modules are parameters of other modules ([`AdapterHost::Parameter`]): they stay as loaded
    /// (checked with transformers 5.24 and bitsandbytes 0.50.2 on qwen3_moe, whose experts and
    /// router stay dense, upcast to fp32 by `prepare_model_for_kbit_training`).
    pub fn quantizable(&self) -> bool {
        self.in_blocks() && self.host == AdapterHost::Module
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
    pub block: BlockSpec,
    pub tied_embeddings: bool,
    pub modules: Vec<LinearModule>,
    pub params: Vec<ParamGroup>,
    /// Sums over `params` that plans start from, computed by [`ModelShape::from_parts`] (the
    /// one constructor). A shape is not edited after construction.
    pub(crate) sums: ParamSums,
    /// The adapter units of `all-linear`, `attn` and `mlp` summed over their modules (in that
    /// order), computed by [`ModelShape::from_parts`]; `None` past 128 module kinds.
    pub(crate) group_adapter_units: Option<[GroupAdapterUnits; 3]>,
}

/// What a rank-`r` adapter on every module of a target group costs per unit of rank: the sums of
/// the modules' [`AdapterUnits`], so that adapting a whole group is one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupAdapterUnits {
    /// Bit `i` set: `modules[i]` is in the group.
    pub mask: u128,
    /// The same modules as a list, lowest index first (what a plan's adapter sites are made
    /// from without walking the mask).
    #[serde(skip)]
    pub modules: GroupModules,
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
    /// What input-reading adapters on every module of the group add to a plan's
    /// [`AdaptedInputs`] (`mlp_input_dtype_outputs` holds the gate/up-like modules).
    pub reads: AdaptedInputs,
}

/// The module indices of a target group, at most 128 (a group is summed only below that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupModules {
    len: u8,
    items: [u8; 128],
}

impl Default for GroupModules {
    fn default() -> Self {
        GroupModules {
            len: 0,
            items: [0; 128],
        }
    }
}

impl GroupModules {
    /// Append module `index` (below 128, and at most 128 of them: the caller's invariant).
    fn push(&mut self, index: usize) {
        self.items[usize::from(self.len)] = index as u8;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.items[..usize::from(self.len)]
    }
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
            g.modules.push(i);
            g.in_plus_out_count += u.in_plus_out_count;
            g.out_count += u.out_count;
            g.first_block_in += u.first_block_in;
            g.count += m.count;
            g.module_hosts_only &= m.host == AdapterHost::Module;
            g.has_attention_output |= m.group == ModuleGroup::Attention && !m.reads_attention_input;
            g.reads = g.reads.plus(u.reads);
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
    /// Weights a matmul under autocast consumes ([`ModelShape::is_matmul_weight`]): every Linear
    /// weight but the fused experts', and the embedding when the lm_head is tied.
    pub matmul_params: u64,
    /// `nn.Linear` weights inside the blocks (what QLoRA quantizes: not the fused experts or the
    /// routers, [`LinearModule::quantizable`]).
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
                if m.quantizable() {
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

    /// The precomputed sums over the parameters.
    pub fn sums(&self) -> &ParamSums {
        &self.sums
    }

    /// Instances of `modules[index]` held in one tensor: a mixture of experts' fused 3-D weight
    /// holds every expert of its layer (and so does the adapter peft's `ParamWrapper` puts on
    /// it); 1 for every other module.
    pub fn instances_per_tensor(&self, index: usize) -> u64 {
        let m = &self.modules[index];
        match self.mlp {
            MlpLayout::Experts(e)
                if matches!(m.host, AdapterHost::Parameter { .. })
                    && m.group == ModuleGroup::Mlp
                    && m.count.is_multiple_of(e.experts.max(1)) =>
            {
                e.experts.max(1)
            }
            _ => 1,
        }
    }

    /// The precomputed adapter units of `modules[index]`.
    pub fn adapter_units(&self, index: usize) -> AdapterUnits {
        self.modules[index].adapter_units
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

    /// The layers `params[index]` sits in: a Linear's weight or bias where its module is, an
    /// embedding outside the blocks, a norm or other tensor in every block when its path has a
    /// layer index (`*`), outside them otherwise (the final norm).
    pub fn param_layers(&self, index: usize) -> LayerKind {
        let p = &self.params[index];
        match p.kind {
            ParamKind::LinearWeight(m) | ParamKind::LinearBias(m) => self.modules[m].layers,
            ParamKind::Embedding | ParamKind::PositionEmbedding => LayerKind::Outside,
            ParamKind::NormWeight | ParamKind::NormBias | ParamKind::Other => {
                if p.name.split('.').any(|c| c == "*") {
                    LayerKind::Every
                } else {
                    LayerKind::Outside
                }
            }
        }
    }

    /// Weights that a matmul under autocast consumes (Linear weights, and the embedding when the
    /// lm_head is tied; not the fused experts' weights, [`LinearModule::fused_experts`]).
    pub fn is_matmul_weight(&self, kind: ParamKind) -> bool {
        match kind {
            ParamKind::LinearWeight(i) => !self.modules[i].fused_experts(),
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
        arch: Architecture,
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
            norm: arch.norm,
            attention: arch.attention,
            mlp: arch.mlp,
            positions: arch.positions,
            block: arch.block,
            tied_embeddings,
            modules,
            params,
        };
        shape.check_totals()?;
        shape.sums = ParamSums::of(&shape);
        let (layers, hidden) = (shape.dims.layers, shape.dims.hidden);
        for m in &mut shape.modules {
            m.adapter_units = AdapterUnits::of(m, layers, hidden);
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

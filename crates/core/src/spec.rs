//! The generic description of a decoder-only transformer, before expansion into modules and
//! parameter groups: dimensions, which building blocks a block holds (norms, q/k norms, attention
//! layout incl. multi-head latent attention, plain/gated/fused MLPs or mixtures of experts with
//! shared experts and dense layers, parallel attention+MLP) and what each module is called.
//!
//! A family (llama, qwen3, gpt_oss, ...) is data in the models crate that fills a
//! [`TransformerSpec`]; nothing here knows a family by name.

use crate::error::ShapeError;
use crate::shape::{
    AdapterHost, AttentionLayout, BlockSpec, Dims, ExpertLayout, Family, LayerKind, LinearLayout,
    LinearModule, MAX_TOTAL_PARAMS, MlpLayout, ModelShape, ModuleGroup, NormKind, ParamGroup,
    ParamKind, PositionKind, QkNorm,
};
use serde::Serialize;

/// What each module and parameter of a family is called (paths relative to the model, `*` for the
/// layer index). peft's `target_modules` match the last component of a module path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Naming {
    pub embed: &'static str,
    pub positions: &'static str,
    /// The layer list (`model.layers`, `transformer.h`).
    pub layers: &'static str,
    pub attention: &'static str,
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub o: &'static str,
    /// A fused q/k/v projection.
    pub qkv: &'static str,
    pub q_norm: &'static str,
    pub k_norm: &'static str,
    pub mlp: &'static str,
    pub up: &'static str,
    pub gate: &'static str,
    pub down: &'static str,
    /// A fused gate/up projection.
    pub gate_up: &'static str,
    /// The norms of a block, in order (how many exist is the block's `norms`).
    pub block_norms: [&'static str; 4],
    pub final_norm: &'static str,
    pub lm_head: &'static str,
    /// Mixture of experts: the router, the experts' container, the shared expert(s) and their
    /// gate (qwen2_moe's `shared_expert_gate`).
    pub router: &'static str,
    pub experts: &'static str,
    pub shared_experts: &'static str,
    pub shared_expert_gate: &'static str,
}

impl Naming {
    /// transformers' LLaMA names, the ones most decoders reuse.
    pub const LLAMA: Naming = Naming {
        embed: "model.embed_tokens",
        positions: "model.embed_positions",
        layers: "model.layers",
        attention: "self_attn",
        q: "q_proj",
        k: "k_proj",
        v: "v_proj",
        o: "o_proj",
        qkv: "qkv_proj",
        q_norm: "q_norm",
        k_norm: "k_norm",
        mlp: "mlp",
        up: "up_proj",
        gate: "gate_proj",
        down: "down_proj",
        gate_up: "gate_up_proj",
        block_norms: [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ],
        final_norm: "model.norm",
        lm_head: "lm_head",
        router: "gate",
        experts: "experts",
        shared_experts: "shared_experts",
        shared_expert_gate: "shared_expert_gate",
    };
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
    /// The MLP width of a dense layer (each expert has its own, in [`MlpLayout::Experts`]).
    pub intermediate: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    /// Bias on q, k, v (or the fused qkv).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub lm_head_bias: bool,
    pub norm: NormKind,
    pub positions: PositionKind,
    pub attention: AttentionLayout,
    pub mlp: MlpLayout,
    pub block: BlockSpec,
    pub names: Naming,
    /// What a scaled MLP width is rounded up to (Meta's `multiple_of`: 256 for LLaMA-style
    /// families; 1 keeps the ratio exact).
    pub intermediate_multiple: u64,
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
    /// vocab 512, tied embedding/lm_head, RoPE, no biases, RMSNorm; its attention is `attn`.
    pub fn minigpt() -> Self {
        TransformerSpec {
            name: "minigpt".into(),
            family: Family::new("minigpt"),
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
            lm_head_bias: false,
            norm: NormKind::RmsNorm,
            positions: PositionKind::Rotary,
            attention: AttentionLayout::Separate,
            mlp: MlpLayout::Plain,
            block: BlockSpec {
                residual_dropout: true,
                ..BlockSpec::DECODER
            },
            names: Naming {
                attention: "attn",
                ..Naming::LLAMA
            },
            intermediate_multiple: 1,
        }
    }

    /// Expand into modules and parameter groups, validating every dimension.
    pub fn build(&self) -> Result<ModelShape, ShapeError> {
        let dims = self.dims()?;
        let mut b = ShapeAssembler {
            spec: self,
            dims,
            modules: Vec::new(),
            params: Vec::new(),
        };
        b.embeddings()?;
        b.block_norms(0..1);
        b.attention()?;
        b.block_norms(1..2);
        b.mlp()?;
        b.block_norms(2..4);
        b.norm(self.names.final_norm, dims.hidden, 1);
        b.lm_head();
        ModelShape::from_parts(
            self.name.clone(),
            self.family.clone(),
            dims,
            crate::shape::Architecture {
                norm: self.norm,
                attention: self.attention,
                mlp: self.mlp,
                positions: self.positions,
                block: self.block,
            },
            self.tied_embeddings,
            b.modules,
            b.params,
        )
    }

    /// The checked dimensions.
    fn dims(&self) -> Result<Dims, ShapeError> {
        let hidden = nonzero("hidden_size", self.hidden)?;
        let layers = nonzero("num_hidden_layers", self.layers)?;
        let heads = nonzero("num_attention_heads", self.heads)?;
        let kv_heads = nonzero("num_key_value_heads", self.kv_heads.unwrap_or(heads))?;
        let intermediate = nonzero("intermediate_size", self.intermediate)?;
        let vocab = nonzero("vocab_size", self.vocab)?;
        let max_positions = match self.positions {
            PositionKind::Learned => nonzero("max_position_embeddings", self.max_positions)?,
            PositionKind::Rotary => self.max_positions,
        };
        if !heads.is_multiple_of(kv_heads) {
            return Err(ShapeError::Inconsistent {
                field: "num_key_value_heads",
                reason: format!("{kv_heads} does not divide num_attention_heads {heads}"),
            });
        }
        let head_dim = match self.head_dim {
            Some(d) => nonzero("head_dim", d)?,
            None => {
                if !hidden.is_multiple_of(heads) {
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
        product("hidden_size", &[hidden, hidden, layers, 16])?;
        product("intermediate_size", &[hidden, intermediate, layers, 3])?;
        product("vocab_size", &[hidden, vocab, 2])?;
        product("head_dim", &[heads, head_dim, hidden, layers, 4])?;
        if let MlpLayout::Experts(e) = self.mlp {
            nonzero("num_experts", e.experts)?;
            nonzero("num_experts_per_tok", e.top_k)?;
            nonzero("moe_intermediate_size", e.intermediate)?;
            if e.top_k > e.experts {
                return Err(ShapeError::Inconsistent {
                    field: "num_experts_per_tok",
                    reason: format!("{} is more than num_local_experts {}", e.top_k, e.experts),
                });
            }
            if e.sparse_layers > layers {
                return Err(ShapeError::Inconsistent {
                    field: "num_hidden_layers",
                    reason: format!(
                        "{} mixture-of-experts layers exceed the {layers} layers",
                        e.sparse_layers
                    ),
                });
            }
            product(
                "num_experts",
                &[e.experts, e.intermediate, hidden, e.sparse_layers.max(1), 3],
            )?;
        }
        if let AttentionLayout::Latent(l) = self.attention {
            nonzero("kv_lora_rank", l.kv_lora_rank)?;
            nonzero("v_head_dim", l.v_head_dim)?;
            nonzero("qk_rope_head_dim", l.qk_rope_head_dim)?;
            if let Some(q) = l.q_lora_rank {
                nonzero("q_lora_rank", q)?;
            }
            product(
                "kv_lora_rank",
                &[heads, l.kv_lora_rank + l.v_head_dim, layers, 4],
            )?;
        }
        if let Some(rotary) = self.block.rotary_dim
            && rotary > head_dim
        {
            return Err(ShapeError::Inconsistent {
                field: "partial_rotary_factor",
                reason: format!("rotary dimension {rotary} exceeds head_dim {head_dim}"),
            });
        }
        Ok(Dims {
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab,
            max_positions,
        })
    }
}

/// Collects modules and parameter groups while a spec is expanded.
struct ShapeAssembler<'a> {
    spec: &'a TransformerSpec,
    dims: Dims,
    modules: Vec<LinearModule>,
    params: Vec<ParamGroup>,
}

/// Where a Linear sits and how peft reaches it.
#[derive(Clone, Copy)]
struct Site {
    group: ModuleGroup,
    host: AdapterHost,
    reads_attention_input: bool,
    in_all_linear: bool,
}

impl Site {
    const fn of(group: ModuleGroup) -> Self {
        Site {
            group,
            host: AdapterHost::Module,
            reads_attention_input: false,
            in_all_linear: true,
        }
    }
    const fn attention_input() -> Self {
        Site {
            reads_attention_input: true,
            ..Site::of(ModuleGroup::Attention)
        }
    }
}

impl ShapeAssembler<'_> {
    fn layer_path(&self, parts: &[&str]) -> String {
        let mut path = format!("{}.*", self.spec.names.layers);
        for p in parts.iter().filter(|p| !p.is_empty()) {
            path.push('.');
            path.push_str(p);
        }
        path
    }

    fn param(&mut self, path: &str, leaf: &str, numel: u64, count: u64, kind: ParamKind) {
        self.params.push(ParamGroup {
            name: format!("{path}.{leaf}"),
            numel,
            count,
            kind,
        });
    }

    fn layout(&self) -> LinearLayout {
        match self.spec.block.conv1d {
            true => LinearLayout::Conv1D,
            false => LinearLayout::Linear,
        }
    }

    /// A Linear `in -> out` with an optional bias, repeated `count` times.
    fn linear(&mut self, path: String, (i, o): (u64, u64), bias: bool, count: u64, site: Site) {
        let index = self.modules.len();
        let layout = self.layout();
        let mut m = LinearModule::new(path, (i, o), bias, count, layout, site.group);
        m.host = site.host;
        m.reads_attention_input = site.reads_attention_input;
        m.in_all_linear = site.in_all_linear;
        self.param(
            &m.path,
            "weight",
            i * o,
            count,
            ParamKind::LinearWeight(index),
        );
        if bias {
            self.param(&m.path, "bias", o, count, ParamKind::LinearBias(index));
        }
        self.modules.push(m);
    }

    fn norm(&mut self, path: &str, numel: u64, count: u64) {
        if self.spec.norm == NormKind::NonParametricLayerNorm {
            return;
        }
        self.param(path, "weight", numel, count, ParamKind::NormWeight);
        if let NormKind::LayerNorm { bias: true } = self.spec.norm {
            self.param(path, "bias", numel, count, ParamKind::NormBias);
        }
    }

    fn embeddings(&mut self) -> Result<(), ShapeError> {
        let (s, d) = (self.spec, self.dims);
        self.param(
            s.names.embed,
            "weight",
            d.vocab * d.hidden,
            1,
            ParamKind::Embedding,
        );
        if s.positions == PositionKind::Learned {
            let table = product("max_position_embeddings", &[d.max_positions, d.hidden])?;
            self.param(
                s.names.positions,
                "weight",
                table,
                1,
                ParamKind::PositionEmbedding,
            );
        }
        Ok(())
    }

    fn attention(&mut self) -> Result<(), ShapeError> {
        let (s, d) = (self.spec, self.dims);
        let n = &s.names;
        let (h, l) = (d.hidden, d.layers);
        let q_out = d.heads * d.head_dim;
        let kv_out = d.kv_heads * d.head_dim;
        let a = n.attention;
        let mut o_in = q_out;
        match s.attention {
            AttentionLayout::Separate => {
                let input = Site::attention_input();
                self.linear(self.layer_path(&[a, n.q]), (h, q_out), s.qkv_bias, l, input);
                self.linear(
                    self.layer_path(&[a, n.k]),
                    (h, kv_out),
                    s.qkv_bias,
                    l,
                    input,
                );
                self.linear(
                    self.layer_path(&[a, n.v]),
                    (h, kv_out),
                    s.qkv_bias,
                    l,
                    input,
                );
            }
            AttentionLayout::FusedQkv => {
                let out = q_out + 2 * kv_out;
                let path = self.layer_path(&[a, n.qkv]);
                self.linear(path, (h, out), s.qkv_bias, l, Site::attention_input());
            }
            AttentionLayout::Latent(m) => {
                let qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim;
                let input = Site::attention_input();
                let inner = Site::of(ModuleGroup::Attention);
                match m.q_lora_rank {
                    Some(rank) => {
                        self.linear(
                            self.layer_path(&[a, "q_a_proj"]),
                            (h, rank),
                            s.qkv_bias,
                            l,
                            input,
                        );
                        let norm = self.layer_path(&[a, "q_a_layernorm"]);
                        self.norm(&norm, rank, l);
                        let out = d.heads * qk_head;
                        self.linear(
                            self.layer_path(&[a, "q_b_proj"]),
                            (rank, out),
                            false,
                            l,
                            inner,
                        );
                    }
                    None => {
                        let out = d.heads * qk_head;
                        self.linear(self.layer_path(&[a, n.q]), (h, out), false, l, input);
                    }
                }
                let kv_a = m.kv_lora_rank + m.qk_rope_head_dim;
                let path = self.layer_path(&[a, "kv_a_proj_with_mqa"]);
                self.linear(path, (h, kv_a), s.qkv_bias, l, input);
                let norm = self.layer_path(&[a, "kv_a_layernorm"]);
                self.norm(&norm, m.kv_lora_rank, l);
                let kv_b = d.heads * (m.qk_nope_head_dim + m.v_head_dim);
                let path = self.layer_path(&[a, "kv_b_proj"]);
                self.linear(path, (m.kv_lora_rank, kv_b), false, l, inner);
                o_in = d.heads * m.v_head_dim;
            }
        }
        let path = self.layer_path(&[a, n.o]);
        self.linear(
            path,
            (o_in, h),
            s.o_bias,
            l,
            Site::of(ModuleGroup::Attention),
        );
        self.qk_norms();
        if s.block.attention_sinks {
            let path = self.layer_path(&[a]);
            self.param(&path, "sinks", d.heads, l, ParamKind::Other);
        }
        Ok(())
    }

    fn qk_norms(&mut self) {
        let (s, d) = (self.spec, self.dims);
        let n = &s.names;
        let l = d.layers;
        let (q, k) = match s.block.qk_norm {
            QkNorm::None => return,
            QkNorm::HeadDim => ((d.head_dim, 1), (d.head_dim, 1)),
            QkNorm::AllHeads => ((d.heads * d.head_dim, 1), (d.kv_heads * d.head_dim, 1)),
            QkNorm::OneTensorPerHead => ((d.head_dim, d.heads), (d.head_dim, d.kv_heads)),
        };
        for (name, (numel, per_layer)) in [(n.q_norm, q), (n.k_norm, k)] {
            if s.block.qk_norm == QkNorm::OneTensorPerHead {
                // StableLM's per-head LayerNorms carry no bias.
                let path = self.layer_path(&[n.attention, name, "norms", "*"]);
                self.param(&path, "weight", numel, l * per_layer, ParamKind::NormWeight);
            } else {
                let path = self.layer_path(&[n.attention, name]);
                self.norm(&path, numel, l * per_layer);
            }
        }
    }

    fn mlp(&mut self) -> Result<(), ShapeError> {
        let s = self.spec;
        match s.mlp {
            MlpLayout::Experts(e) => {
                let dense = self.dims.layers - e.sparse_layers;
                let first_dense = self.modules.len();
                if dense > 0 {
                    self.dense_mlp(MlpLayout::Gated, self.dims.intermediate, dense, s.names.mlp);
                }
                let first_sparse = self.modules.len();
                if e.sparse_layers > 0 {
                    self.experts(e);
                }
                // Dense MLPs sit in the dense layers; router, experts and shared experts in the
                // others.
                for (i, m) in self.modules.iter_mut().enumerate().skip(first_dense) {
                    m.layers = if i < first_sparse {
                        LayerKind::Dense
                    } else {
                        LayerKind::Sparse
                    };
                }
            }
            layout => self.dense_mlp(
                layout,
                self.dims.intermediate,
                self.dims.layers,
                s.names.mlp,
            ),
        }
        Ok(())
    }

    /// A dense MLP of width `inter` in `count` layers, under `prefix` (`mlp`, or a shared
    /// expert's path).
    fn dense_mlp(&mut self, layout: MlpLayout, inter: u64, count: u64, prefix: &str) {
        let (s, h) = (self.spec, self.dims.hidden);
        let n = &s.names;
        let bias = s.mlp_bias;
        let site = Site::of(ModuleGroup::Mlp);
        let path = |b: &Self, leaf: &str| b.layer_path(&[prefix, leaf]);
        match layout {
            MlpLayout::Plain => {
                self.linear(path(self, n.up), (h, inter), bias, count, site);
                self.linear(path(self, n.down), (inter, h), bias, count, site);
            }
            MlpLayout::Gated | MlpLayout::Experts(_) => {
                self.linear(path(self, n.gate), (h, inter), bias, count, site);
                self.linear(path(self, n.up), (h, inter), bias, count, site);
                self.linear(path(self, n.down), (inter, h), bias, count, site);
            }
            MlpLayout::FusedGated => {
                self.linear(path(self, n.gate_up), (h, 2 * inter), bias, count, site);
                self.linear(path(self, n.down), (inter, h), bias, count, site);
            }
        }
    }

    /// A mixture-of-experts MLP: the router, the experts' fused 3-D weights (transformers 5),
    /// shared experts, and how peft reaches them ([`crate::shape::ExpertTargets`]).
    fn experts(&mut self, e: crate::shape::ExpertsSpec) {
        let (s, h) = (self.spec, self.dims.hidden);
        let n = &s.names;
        let layers = e.sparse_layers;
        let total = layers * e.experts;
        let first_expert_module = self.modules.len();
        let unreachable = |site: Site| Site {
            in_all_linear: false,
            ..site
        };
        let param_host = |fused: u64, group| {
            let site = Site {
                host: AdapterHost::Parameter { fused },
                ..Site::of(group)
            };
            if e.peft_targets.is_some() {
                site
            } else {
                unreachable(site)
            }
        };
        let targets = e.peft_targets;
        let names = |pick: fn(&crate::shape::ExpertTargets) -> &'static [&'static str]| {
            targets.map_or(Vec::new(), |t| {
                pick(&t).iter().map(|s| s.to_string()).collect()
            })
        };
        let router = self.layer_path(&[n.mlp, n.router]);
        self.linear(
            router,
            (h, e.experts),
            e.router_bias,
            layers,
            param_host(1, ModuleGroup::Router),
        );
        self.modules[first_expert_module].target_names =
            targets.map_or(Vec::new(), |t| vec![t.router.to_string()]);
        let experts = self.layer_path(&[n.mlp, n.experts]);
        let gate_up_names = names(|t| t.gate_up);
        let fused = gate_up_names.len().max(1) as u64;
        let index = self.modules.len();
        self.linear(
            format!("{experts}.gate_up_proj"),
            (h, 2 * e.intermediate),
            false,
            total,
            param_host(fused, ModuleGroup::Mlp),
        );
        self.modules[index].target_names = gate_up_names;
        let index = self.modules.len();
        self.linear(
            format!("{experts}.down_proj"),
            (e.intermediate, h),
            false,
            total,
            param_host(1, ModuleGroup::Mlp),
        );
        self.modules[index].target_names = names(|t| t.down);
        // Each fused weight is one 3-D tensor per layer (`[E, 2I, H]`, `[E, H, I]`): the
        // optimizer keeps one step counter per tensor, not per expert.
        for p in self
            .params
            .iter_mut()
            .filter(|p| p.name.starts_with(&experts))
        {
            p.numel *= e.experts;
            p.count = layers;
        }
        let ExpertLayout::Fused { bias } = e.layout;
        if bias {
            for (leaf, numel) in [
                ("gate_up_proj_bias", 2 * e.intermediate),
                ("down_proj_bias", h),
            ] {
                self.param(&experts, leaf, numel * e.experts, layers, ParamKind::Other);
            }
        }
        if let Some(shared) = e.shared {
            let prefix = format!("{}.{}", n.mlp, n.shared_experts);
            self.dense_mlp(MlpLayout::Gated, shared.intermediate, layers, &prefix);
            if shared.gate {
                let path = self.layer_path(&[n.mlp, n.shared_expert_gate]);
                self.linear(path, (h, 1), false, layers, Site::of(ModuleGroup::Mlp));
            }
        }
        // peft moves the converted names from modules to the experts' parameters: Linear
        // modules with those names (dense layers, shared experts) are not adapted.
        if let Some(t) = targets {
            let converted = |name: &str| {
                name == t.router || t.gate_up.contains(&name) || t.down.contains(&name)
            };
            for m in &mut self.modules {
                if m.host == AdapterHost::Module
                    && m.group != ModuleGroup::Output
                    && converted(&m.name)
                {
                    m.target_names.clear();
                    m.in_all_linear = false;
                }
            }
        }
    }

    /// The block norms `range` of the family's list that the block has.
    fn block_norms(&mut self, range: std::ops::Range<usize>) {
        let (s, d) = (self.spec, self.dims);
        let count = usize::from(s.block.norms).min(4);
        for name in &s.names.block_norms[range.start.min(count)..range.end.min(count)] {
            let path = self.layer_path(&[name]);
            self.norm(&path, d.hidden, d.layers);
        }
    }

    fn lm_head(&mut self) {
        let (s, d) = (self.spec, self.dims);
        let site = Site {
            in_all_linear: false,
            ..Site::of(ModuleGroup::Output)
        };
        let path = s.names.lm_head.to_string();
        if s.tied_embeddings {
            let mut head = LinearModule::new(
                path,
                (d.hidden, d.vocab),
                false,
                1,
                LinearLayout::Linear,
                ModuleGroup::Output,
            );
            head.weight_tied = true;
            head.in_all_linear = false;
            self.modules.push(head);
            if s.lm_head_bias {
                let index = self.modules.len() - 1;
                self.modules[index].bias = true;
                self.param(
                    s.names.lm_head,
                    "bias",
                    d.vocab,
                    1,
                    ParamKind::LinearBias(index),
                );
            }
        } else {
            let index = self.modules.len();
            self.linear(path, (d.hidden, d.vocab), s.lm_head_bias, 1, site);
            self.modules[index].layout = LinearLayout::Linear;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{AdapterHost, ExpertLayout, ExpertsSpec};

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
            family: Family::new("llama"),
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
            lm_head_bias: false,
            norm: NormKind::RmsNorm,
            positions: PositionKind::Rotary,
            attention: AttentionLayout::Separate,
            mlp: MlpLayout::Gated,
            block: BlockSpec::DECODER,
            names: Naming::LLAMA,
            intermediate_multiple: 256,
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
        spec.family = Family::new("mixtral");
        spec.intermediate = 96;
        spec.layers = 2;
        spec.mlp = MlpLayout::Experts(ExpertsSpec {
            experts: 4,
            top_k: 2,
            intermediate: 96,
            sparse_layers: 2,
            dense_span: None,
            sparse_span: Some(crate::shape::LayerSpan::all_sparse(2)),
            layout: ExpertLayout::Fused { bias: false },
            router_bias: false,
            routing_groups: None,
            shared: None,
            peft_targets: Some(crate::shape::ExpertTargets {
                router: "gate",
                gate_up: &["w1", "w3"],
                down: &["w2"],
            }),
        });
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

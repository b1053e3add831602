//! LoRA as peft implements it: every targeted Linear keeps its frozen weight and gains
//! `A (r x in)` and `B (out x r)`, `r (in + out)` trainable parameters. The counting rules are
//! peft's (`bias=`, `modules_to_save`, `lora_bias`, DoRA magnitudes), so trainable and all-params
//! figures match `get_nb_trainable_parameters()` to the parameter. QLoRA and DoRA reuse
//! [`LoraConfig`] and [`adapter_plan_into`]; they differ only in base storage and magnitudes.

use ftbudget_core::{
    AdapterHost, AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite, BaseTraining,
    BaseTreatment, CountError, ModelShape, OptionDoc, OptionReader, ParamKind, ParamOrigin,
    ParamSource, PieceMatmul, PlannedParams, Regime, RegimeError, RegimeRegistration, RegimeSpec,
    ShapeError, SizeForm, Storage, TargetSelection, TargetSpec, TrainingPlan, UnknownName,
    names_select,
};
use std::str::FromStr;

pub const NAME: &str = "lora";

/// The largest rank accepted: far above any real use, low enough that counts stay exact.
pub const MAX_RANK: u64 = 1 << 20;

/// peft's `bias=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasMode {
    /// No base bias is trained.
    None,
    /// Every bias of the model, norm biases included.
    All,
    /// Only the biases of adapted modules.
    LoraOnly,
}

impl FromStr for BiasMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(BiasMode::None),
            "all" => Ok(BiasMode::All),
            "lora_only" | "lora-only" => Ok(BiasMode::LoraOnly),
            other => Err(UnknownName {
                what: "bias mode",
                value: other.to_string(),
                expected: "none, all or lora_only".into(),
            }),
        }
    }
}

impl BiasMode {
    pub const fn name(self) -> &'static str {
        match self {
            BiasMode::None => "none",
            BiasMode::All => "all",
            BiasMode::LoraOnly => "lora_only",
        }
    }
}

/// The options shared by every LoRA-family regime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraConfig {
    pub rank: u64,
    pub targets: TargetSpec,
    pub bias: BiasMode,
    /// Module names given a full trainable copy (peft's `modules_to_save`).
    pub modules_to_save: Vec<String>,
    /// A trainable bias on `lora_B`.
    pub lora_bias: bool,
    /// DoRA: one trainable magnitude per output feature of each adapted module.
    pub dora: bool,
    /// Parameters adapted by name through peft's `target_parameters` (`lora.ParamWrapper`):
    /// `mlp.experts.gate_up_proj`, `mlp.router.weight`. Rank `r` per expert, never doubled.
    pub target_parameters: Vec<String>,
    /// peft's `layers_to_transform`: adapt only the modules of these layers (`None`: all).
    pub layers: Option<Vec<u64>>,
    /// peft's `rank_pattern`: (pattern, rank), the first pattern matching a module's name wins.
    pub rank_pattern: Vec<(String, u64)>,
    /// Block Linear weights stored as bitsandbytes LLM.int8 (`load_in_8bit`).
    pub base_int8: bool,
    /// peft's `lora_alpha` as given (the update's scale `alpha / r`): no parameter, byte or FLOP
    /// depends on it; kept so that a spec copied from a config reads back as written.
    pub alpha: Option<String>,
}

pub const LORA_OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "r",
        values: "<int>",
        default: "8",
        help: "adapter rank",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "all-linear",
        help: "modules to adapt (peft's target_modules)",
    },
    OptionDoc {
        key: "bias",
        values: "none|all|lora_only",
        default: "none",
        help: "which base biases are trained (peft's bias=)",
    },
    OptionDoc {
        key: "modules_to_save",
        values: "name+name...",
        default: "",
        help: "modules given a full trainable copy, e.g. lm_head",
    },
    OptionDoc {
        key: "lora_bias",
        values: "true|false",
        default: "false",
        help: "a trainable bias on lora_B",
    },
    OptionDoc {
        key: "target_parameters",
        values: "name+name...",
        default: "",
        help: "parameters adapted through peft's target_parameters, e.g. mlp.experts.gate_up_proj (targets=none adapts no module)",
    },
    OptionDoc {
        key: "layers",
        values: "index+index...",
        default: "all",
        help: "peft's layers_to_transform: adapt only these layers (0-based), e.g. layers=0+1+2",
    },
    OptionDoc {
        key: "rank_pattern",
        values: "name:rank+name:rank...",
        default: "",
        help: "peft's rank_pattern: per-module ranks, e.g. rank_pattern=q_proj:16+v_proj:4 or layers.0.self_attn.q_proj:32 (first match wins)",
    },
    OptionDoc {
        key: "base",
        values: "policy|int8",
        default: "policy",
        help: "block Linear weights as the precision says, or bitsandbytes LLM.int8 (load_in_8bit: int8 + fp32 scale per row)",
    },
    OptionDoc {
        key: "alpha",
        values: "<number>",
        default: "8",
        help: "peft's lora_alpha (scale alpha/r): accepted as configs write it; changes no count, byte or FLOP",
    },
];

impl LoraConfig {
    /// Read the shared options; `dora` comes from the regime, not the spec.
    pub fn from_reader(reader: &OptionReader<'_>, dora: bool) -> Result<Self, RegimeError> {
        let rank = reader.positive("r", 8, MAX_RANK)?;
        let targets = match reader.raw("targets") {
            None => TargetSpec::AllLinear,
            // peft's `target_modules=[]` beside `target_parameters`: no module.
            Some("none") => TargetSpec::Names(Vec::new()),
            Some(v) => v.parse().map_err(|e: ftbudget_core::TargetSpecError| {
                reader.invalid("targets", v, &e.to_string())
            })?,
        };
        let bias = reader.parse("bias", BiasMode::None, "none, all or lora_only")?;
        let modules_to_save = match reader.raw("modules_to_save") {
            None | Some("") => Vec::new(),
            Some(v) => v.split('+').map(str::to_string).collect(),
        };
        let lora_bias = reader.flag("lora_bias", false)?;
        let target_parameters: Vec<String> = match reader.raw("target_parameters") {
            None | Some("") => Vec::new(),
            Some(v) => v.split('+').map(str::to_string).collect(),
        };
        if targets == TargetSpec::Names(Vec::new()) && target_parameters.is_empty() {
            return Err(reader.invalid(
                "targets",
                "none",
                "module names, or none with target_parameters",
            ));
        }
        let layers = match reader.raw("layers") {
            None | Some("all") => None,
            Some(v) => Some(
                v.split('+')
                    .map(|i| i.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| reader.invalid("layers", v, "layer indices joined by +"))?,
            ),
        };
        let rank_pattern = match reader.raw("rank_pattern") {
            None | Some("") => Vec::new(),
            Some(v) => parse_rank_pattern(v)
                .ok_or_else(|| reader.invalid("rank_pattern", v, "name:rank pairs joined by +"))?,
        };
        let base_int8 = match reader.raw("base") {
            None | Some("policy") => false,
            Some("int8") => true,
            Some(v) => return Err(reader.invalid("base", v, "policy or int8")),
        };
        let alpha = match reader.raw("alpha") {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(a) if a.is_finite() && a > 0.0 => Some(v.to_string()),
                _ => return Err(reader.invalid("alpha", v, "a positive number")),
            },
        };
        Ok(LoraConfig {
            alpha,
            target_parameters,
            rank,
            targets,
            bias,
            modules_to_save,
            lora_bias,
            dora,
            layers,
            rank_pattern,
            base_int8,
        })
    }

    /// The rank peft gives the module at `path` (`rank_pattern`'s first match, else `r`).
    pub fn rank_for(&self, path: &str) -> u64 {
        self.rank_pattern
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, path))
            .map_or(self.rank, |&(_, r)| r)
    }

    /// The options that differ from their defaults, as spec text (`r=8,targets=q_proj+v_proj`).
    pub fn spec_options(&self) -> Vec<String> {
        let mut out = vec![format!("r={}", self.rank)];
        if let Some(alpha) = &self.alpha {
            out.push(format!("alpha={alpha}"));
        }
        if self.targets != TargetSpec::AllLinear {
            out.push(format!("targets={}", self.targets));
        }
        if self.bias != BiasMode::None {
            out.push(format!("bias={}", self.bias.name()));
        }
        if !self.modules_to_save.is_empty() {
            out.push(format!(
                "modules_to_save={}",
                self.modules_to_save.join("+")
            ));
        }
        if self.lora_bias {
            out.push("lora_bias=true".into());
        }
        if !self.target_parameters.is_empty() {
            out.push(format!(
                "target_parameters={}",
                self.target_parameters.join("+")
            ));
        }
        if let Some(layers) = &self.layers {
            let l: Vec<String> = layers.iter().map(u64::to_string).collect();
            out.push(format!("layers={}", l.join("+")));
        }
        if !self.rank_pattern.is_empty() {
            let p: Vec<String> = self
                .rank_pattern
                .iter()
                .map(|(k, r)| format!("{k}:{r}"))
                .collect();
            out.push(format!("rank_pattern={}", p.join("+")));
        }
        if self.base_int8 {
            out.push("base=int8".into());
        }
        out
    }

    pub fn label_suffix(&self) -> String {
        let mut s = format!("r={}", self.rank);
        if self.targets != TargetSpec::AllLinear {
            s.push_str(&format!(" ({})", self.targets));
        }
        s
    }
}

/// `name:rank+name:rank`; names are module names or dotted paths (no regular expressions).
fn parse_rank_pattern(text: &str) -> Option<Vec<(String, u64)>> {
    text.split('+')
        .map(|pair| {
            let (name, rank) = pair.split_once(':')?;
            let plain = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let rank = rank
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&r| (1..=MAX_RANK).contains(&r))?;
            (plain && !name.is_empty()).then(|| (name.to_string(), rank))
        })
        .collect()
}

/// peft's `get_pattern_key`: `re.match(rf"(.*\.)?({pattern})$", name)`, for a pattern without
/// regular-expression syntax: the name is the pattern or ends with `.pattern`.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    name == pattern
        || name.len() > pattern.len()
            && name.ends_with(pattern)
            && name.as_bytes()[name.len() - pattern.len() - 1] == b'.'
}

/// peft's `lora_A`: `r x in`, applied to the module's input.
const LORA_A: AdapterPiece =
    AdapterPiece::trainable("lora_A.weight", SizeForm::RANK_IN, PieceMatmul::Input);
/// peft's `lora_B`: `out x r`, applied to `x A`.
const LORA_B: AdapterPiece =
    AdapterPiece::trainable("lora_B.weight", SizeForm::RANK_OUT, PieceMatmul::Inner);
/// peft's `lora_bias=True`: a bias of `out` on lora_B.
const LORA_B_BIAS: AdapterPiece =
    AdapterPiece::trainable("lora_B.bias", SizeForm::OUT, PieceMatmul::No);
/// DoRA's magnitude: one per output feature.
const DORA_MAGNITUDE: AdapterPiece =
    AdapterPiece::trainable("lora_magnitude_vector", SizeForm::OUT, PieceMatmul::No);

/// A low-rank adapter (`x A B`): A and B, and saved `x A` (`rank` elements per token and
/// instance, for B's backward).
const LORA: AdapterLayout = AdapterLayout::new("lora", SizeForm::RANK)
    .with(LORA_A)
    .with(LORA_B);

/// LoRA with a trainable lora_B bias (peft's `lora_bias=True`).
const LORA_WITH_BIAS: AdapterLayout = LORA.with(LORA_B_BIAS);
/// DoRA: LoRA plus one magnitude per output feature.
const DORA: AdapterLayout = {
    let mut layout = LORA.with(DORA_MAGNITUDE);
    layout.name = "dora";
    layout
};

/// The tensors of one LoRA-family adapter in peft's order: A, B, then a lora_B bias or a DoRA
/// magnitude (peft refuses both at once, and so does [`adapter_plan_into`]).
pub const fn adapter_layout(lora_bias: bool, dora: bool) -> &'static AdapterLayout {
    match (lora_bias, dora) {
        (false, false) => &LORA,
        (true, _) => &LORA_WITH_BIAS,
        (false, true) => &DORA,
    }
}

/// The layouts over a bitsandbytes 4-bit Linear: its forward computes in
/// `bnb_4bit_compute_dtype` and returns `.to(inp_dtype)`, the module input's dtype (fp32 under
/// autocast, where the block's norms hand fp32 to the Linears), and peft adds the adapter's
/// output to that.
const LORA_OVER_4BIT: AdapterLayout = LORA.with_output(AdapterOutput::InputDtype);
const LORA_WITH_BIAS_OVER_4BIT: AdapterLayout =
    LORA_WITH_BIAS.with_output(AdapterOutput::InputDtype);
const DORA_OVER_4BIT: AdapterLayout = DORA.with_output(AdapterOutput::InputDtype);

/// peft's `lora.ParamWrapper` (`target_parameters`: MoE routers and fused experts): A and B as
/// LoRA's, but the wrapped parameter's forward runs on the merged weight `W + s B A` (peft 0.21's
/// `_LoraFactorsProxy`), so no `x A` is saved per token; the activation model counts the merged
/// weight, the factors' casts and the input the matmul saves (measured with saved-tensor hooks on
/// qwen3_moe).
/// The factors are no matmul weights of their own here (autocast copies them, when it does,
/// inside the merge, which the activation model counts with the merged weight).
const LORA_PARAM_WRAPPER: AdapterLayout = AdapterLayout::new("lora", SizeForm::ZERO)
    .with(AdapterPiece::trainable(
        "lora_A.weight",
        SizeForm::RANK_IN,
        PieceMatmul::No,
    ))
    .with(AdapterPiece::trainable(
        "lora_B.weight",
        SizeForm::RANK_OUT,
        PieceMatmul::No,
    ));

/// The layout of an adapter on `host`: `layout`, or for a wrapped parameter
/// [`LORA_PARAM_WRAPPER`] (peft refuses DoRA and `lora_bias` there; callers check).
pub const fn layout_on(
    host: AdapterHost,
    layout: &'static AdapterLayout,
) -> &'static AdapterLayout {
    match host {
        AdapterHost::Module => layout,
        AdapterHost::Parameter { .. } => &LORA_PARAM_WRAPPER,
    }
}

/// [`adapter_layout`] for adapters on block Linears stored as `storage`: over NF4 (bitsandbytes'
/// `Linear4bit`) the adapted Linear returns its input's dtype.
pub const fn adapter_layout_over(
    lora_bias: bool,
    dora: bool,
    storage: Storage,
) -> &'static AdapterLayout {
    match (storage, lora_bias, dora) {
        (Storage::Nf4(_), false, false) => &LORA_OVER_4BIT,
        (Storage::Nf4(_), true, _) => &LORA_WITH_BIAS_OVER_4BIT,
        (Storage::Nf4(_), false, true) => &DORA_OVER_4BIT,
        _ => adapter_layout(lora_bias, dora),
    }
}

fn shape_err(regime: &str) -> impl Fn(ftbudget_core::ShapeError) -> RegimeError + '_ {
    move |cause| RegimeError::Shape {
        regime: regime.to_string(),
        cause,
    }
}

fn checked(regime: &str, what: &'static str, v: Option<u64>) -> Result<u64, RegimeError> {
    v.ok_or_else(|| RegimeError::Count {
        regime: regime.to_string(),
        cause: CountError { what },
    })
}

/// How the base's Linears inside the blocks are stored: their weights (the policy for LoRA, NF4
/// for QLoRA) and their frozen biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLinears {
    pub weights: Storage,
    /// bitsandbytes' `Linear4bit` casts its bias to `bnb_4bit_compute_dtype` in its first
    /// forward (`bias.data = bias.data.to(x.dtype)`), so a QLoRA base holds its block Linears'
    /// biases in that dtype; [`Storage::Policy`] otherwise. (A trained bias is cast too; that
    /// case is not modelled: it follows the policy.)
    pub frozen_biases: Storage,
    /// Every base parameter outside the block Linears (embeddings, norms, lm_head, biases):
    /// [`Storage::Policy`], or QLoRA's fp32 after peft's `prepare_model_for_kbit_training`
    /// ([`BaseTreatment::other_storage`]).
    pub other_params: Storage,
}

impl BlockLinears {
    /// Weights stored as `weights`, biases as the policy says.
    pub const fn weights(weights: Storage) -> Self {
        BlockLinears {
            weights,
            frozen_biases: Storage::Policy,
            other_params: Storage::Policy,
        }
    }
}

/// The plan of a LoRA-family regime, written into `plan` (cleared first).
/// `block_linear_storage` is how the base's Linear weights inside the blocks are stored (the
/// policy for LoRA, NF4 for QLoRA).
pub fn adapter_plan_into(
    regime: &str,
    model: &ModelShape,
    config: &LoraConfig,
    block_linear_storage: Storage,
    plan: &mut TrainingPlan,
) -> Result<(), RegimeError> {
    adapter_plan_over_into(
        regime,
        model,
        config,
        BlockLinears::weights(block_linear_storage),
        plan,
    )
}

/// [`adapter_plan_into`] over block Linears whose biases may have their own storage.
pub fn adapter_plan_over_into(
    regime: &str,
    model: &ModelShape,
    config: &LoraConfig,
    block_linears: BlockLinears,
    plan: &mut TrainingPlan,
) -> Result<(), RegimeError> {
    let block_linear_storage = block_linears.weights;
    plan.clear();
    if config.dora && config.lora_bias {
        // peft: "The argument lora_bias=True is not supported for DoRA".
        return Err(RegimeError::InvalidOption {
            regime: regime.to_string(),
            key: "lora_bias".into(),
            value: "true".into(),
            expected: "false: peft does not support lora_bias with DoRA".into(),
        });
    }
    // Checked and resolved once; then `contains` answers per module without allocating (sweeps
    // plan millions of times).
    let no_modules = config.targets == TargetSpec::Names(Vec::new());
    let parameter_targets = parameter_targets(regime, model, config)?;
    let targets = if no_modules {
        TargetSelection::Mask(0)
    } else {
        model
            .select_targets(&config.targets)
            .map_err(shape_err(regime))?
    };
    // Embeddings are no Linear module: their names are checked (and copied) apart.
    let (embedding_names, linear_names): (Vec<String>, Vec<String>) =
        if config.modules_to_save.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            config
                .modules_to_save
                .iter()
                .cloned()
                .partition(|n| embedding_param(model, n).is_some())
        };
    model
        .check_names(&linear_names)
        .map_err(shape_err(regime))?;
    let frozen = BaseTreatment {
        training: BaseTraining::Frozen,
        block_linear_storage,
        other_storage: block_linears.other_params,
    };
    let base = BaseTreatment {
        training: match config.bias {
            BiasMode::All => BaseTraining::Biases,
            BiasMode::None | BiasMode::LoraOnly => BaseTraining::Frozen,
        },
        ..frozen
    };
    // Block Linear biases stored apart (a QLoRA base with biased Linears), or only the biases
    // of adapted modules trained: base parameters one by one. Otherwise one rule for all.
    let biases_apart = block_linears.frozen_biases != Storage::Policy
        && model
            .params
            .iter()
            .any(|p| is_block_linear_bias(model, p.kind));
    if config.bias == BiasMode::LoraOnly || biases_apart {
        for (index, p) in model.params.iter().enumerate() {
            let mut group = base.group(model, index);
            if config.bias == BiasMode::LoraOnly
                && let ParamKind::LinearBias(i) = p.kind
            {
                group.trainable = targets.contains(i, &model.modules[i]);
            }
            if !group.trainable && is_block_linear_bias(model, p.kind) {
                group.storage = block_linears.frozen_biases;
            }
            plan.push_group(model, group);
        }
    } else {
        plan.set_base(model, base);
    }
    // A whole group (all-linear, attn, mlp) in one step from the shape's precomputed sums;
    // otherwise module by module.
    let layout = adapter_layout_over(config.lora_bias, config.dora, block_linear_storage);
    let per_layer = config.layers.is_some() || !config.rank_pattern.is_empty();
    if per_layer && !no_modules {
        if config.bias == BiasMode::LoraOnly && config.layers.is_some() {
            return Err(RegimeError::InvalidOption {
                regime: regime.to_string(),
                key: "bias".into(),
                value: "lora_only".into(),
                expected: "none or all with layers= (lora_only biases per layer are not modelled)"
                    .into(),
            });
        }
        layered_adapters_into(regime, model, config, &targets, layout, plan)?;
    }
    let whole_group = !per_layer
        && !no_modules
        && model
            .group_adapter_units(&config.targets)
            .is_some_and(|units| plan.try_push_group_adapters(units, config.rank, layout));
    if !per_layer && !whole_group {
        for (i, m) in model.modules.iter().enumerate() {
            if !targets.contains(i, m) {
                continue;
            }
            if m.host != AdapterHost::Module && (config.dora || config.lora_bias) {
                // peft's lora.ParamWrapper refuses both.
                let option = if config.dora { "DoRA" } else { "lora_bias" };
                return Err(shape_err(regime)(ShapeError::Inconsistent {
                    field: "targets",
                    reason: format!(
                        "`{}` is adapted through peft's target_parameters (lora.ParamWrapper), which does not support {option}",
                        m.target_names.join("+")
                    ),
                }));
            }
            // Fused expert weights share one adapter of rank `fused * r`.
            let rank = checked(
                regime,
                "lora rank",
                config.rank.checked_mul(m.host.rank_factor()),
            )?;
            let site = AdapterSite {
                module: i,
                rank,
                layout: layout_on(m.host, layout),
            };
            plan.push_adapter(model, site)
                .map_err(|cause| RegimeError::Count {
                    regime: regime.to_string(),
                    cause,
                })?;
        }
    }
    push_parameter_adapters(regime, model, config, &parameter_targets, &targets, plan)?;
    push_saved_copies(model, &linear_names, plan);
    // peft's ModulesToSaveWrapper on an embedding (`embed_tokens`): a trainable copy.
    for name in &embedding_names {
        if let Some(index) = embedding_param(model, name) {
            let p = &model.params[index];
            plan.push_group(
                model,
                PlannedParams {
                    source: ParamSource::Extra {
                        name: "modules_to_save embedding",
                    },
                    numel: p.numel,
                    count: p.count,
                    trainable: true,
                    origin: ParamOrigin::SavedCopy,
                    storage: Storage::Policy,
                    matmul_weight: false,
                },
            );
        }
    }
    Ok(())
}

/// The token embedding parameter `name` (peft's suffix match on its module path) names.
fn embedding_param(model: &ModelShape, name: &str) -> Option<usize> {
    model.params.iter().position(|p| {
        p.kind == ParamKind::Embedding && {
            let path = p.name.strip_suffix(".weight").unwrap_or(&p.name);
            path == name || path.ends_with(&format!(".{name}"))
        }
    })
}

/// Adapters with peft's `layers_to_transform` and `rank_pattern`: each targeted block module's
/// layers grouped by the rank they get, one site per group; a module outside the blocks (the
/// lm_head) has no layer index and is adapted whole.
fn layered_adapters_into(
    regime: &str,
    model: &ModelShape,
    config: &LoraConfig,
    targets: &ftbudget_core::TargetSelection<'_>,
    layout: &'static AdapterLayout,
    plan: &mut TrainingPlan,
) -> Result<(), RegimeError> {
    let layers = model.dims.layers;
    let count_err = |cause| RegimeError::Count {
        regime: regime.to_string(),
        cause,
    };
    let selected = |i: u64| config.layers.as_ref().is_none_or(|l| l.contains(&i));
    let mut any = false;
    let mut by_rank: Vec<(u64, u64)> = Vec::new();
    for (i, m) in model.modules.iter().enumerate() {
        if !targets.contains(i, m) {
            continue;
        }
        if m.host != AdapterHost::Module && (config.dora || config.lora_bias) {
            return Err(shape_err(regime)(ShapeError::Inconsistent {
                field: "targets",
                reason: format!(
                    "`{}` is adapted through peft's target_parameters (lora.ParamWrapper), which does not support DoRA or lora_bias",
                    m.target_names.join("+")
                ),
            }));
        }
        let site = |rank: u64| -> Result<AdapterSite, RegimeError> {
            Ok(AdapterSite {
                module: i,
                rank: checked(regime, "lora rank", rank.checked_mul(m.host.rank_factor()))?,
                layout: layout_on(m.host, layout),
            })
        };
        if !m.path.contains('*') {
            // Measured (fixtures/peft/recipes_counts.json, `layers=0+1,lm_head`): peft 0.21
            // adapts a module named exactly in target_modules (the lm_head) whatever
            // layers_to_transform says.
            plan.push_adapter(model, site(config.rank_for(&m.path))?)
                .map_err(count_err)?;
            any = true;
            continue;
        }
        if layers == 0 || m.count % layers != 0 {
            return Err(shape_err(regime)(ShapeError::Inconsistent {
                field: "layers",
                reason: format!("`{}` does not repeat once per layer", m.path),
            }));
        }
        by_rank.clear();
        for layer in (0..layers).filter(|&l| selected(l)) {
            let path = m.path.replacen('*', &layer.to_string(), 1);
            let rank = config.rank_for(&path);
            match by_rank.iter_mut().find(|(r, _)| *r == rank) {
                Some(entry) => entry.1 += 1,
                None => by_rank.push((rank, 1)),
            }
        }
        for &(rank, n) in &by_rank {
            plan.push_adapter_on_layers(model, site(rank)?, n)
                .map_err(count_err)?;
            any = true;
        }
    }
    if !any {
        // peft: "Target modules ... not found in the base model" (layers_to_transform noted).
        return Err(shape_err(regime)(ShapeError::Inconsistent {
            field: "layers",
            reason: format!(
                "no targeted module sits in layers {:?} (the model has {layers})",
                config.layers.as_deref().unwrap_or_default()
            ),
        }));
    }
    Ok(())
}

pub struct Lora {
    pub config: LoraConfig,
}

impl Regime for Lora {
    fn spec(&self) -> String {
        format!("{NAME}:{}", self.config.spec_options().join(","))
    }

    fn label(&self) -> String {
        let base = if self.config.base_int8 {
            " int8 base"
        } else {
            ""
        };
        format!("LoRA {}{base}", self.config.label_suffix())
    }

    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError> {
        let storage = if self.config.base_int8 {
            Storage::Int8
        } else {
            Storage::Policy
        };
        adapter_plan_into(NAME, model, &self.config, storage, out)
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, LORA_OPTIONS)?;
    Ok(Box::new(Lora {
        config: LoraConfig::from_reader(&reader, false)?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "LoRA: frozen base, trainable low-rank A and B on the targeted Linears (peft)",
        options: LORA_OPTIONS,
        rank_option: Some("r"),
        build,
    }
}

/// The bias of an `nn.Linear` inside the blocks (the Linears a quantized base swaps).
fn is_block_linear_bias(model: &ModelShape, kind: ParamKind) -> bool {
    matches!(kind, ParamKind::LinearBias(i) if model.modules[i].quantizable())
}

/// peft's explicit `target_parameters`: one ParamWrapper of rank `r` per named parameter not
/// already adapted as a module; ParamWrapper refuses DoRA and `lora_bias`.
fn push_parameter_adapters(
    regime: &str,
    model: &ModelShape,
    config: &LoraConfig,
    parameter_targets: &[usize],
    targets: &TargetSelection<'_>,
    plan: &mut TrainingPlan,
) -> Result<(), RegimeError> {
    let layout = adapter_layout(config.lora_bias, config.dora);
    for &i in parameter_targets {
        if targets.contains(i, &model.modules[i]) {
            continue;
        }
        if config.dora || config.lora_bias {
            let option = if config.dora { "DoRA" } else { "lora_bias" };
            return Err(shape_err(regime)(ShapeError::Inconsistent {
                field: "target_parameters",
                reason: format!(
                    "peft's lora.ParamWrapper does not work with {option} (`{}`)",
                    model.modules[i].path
                ),
            }));
        }
        let site = AdapterSite {
            module: i,
            rank: config.rank,
            layout: layout_on(model.modules[i].host, layout),
        };
        plan.push_adapter(model, site)
            .map_err(|cause| RegimeError::Count {
                regime: regime.to_string(),
                cause,
            })?;
    }
    Ok(())
}

/// peft's `modules_to_save`: a full trainable copy of each named module beside its frozen
/// original.
fn push_saved_copies(model: &ModelShape, names: &[String], plan: &mut TrainingPlan) {
    if names.is_empty() {
        return;
    }
    for (i, m) in model.modules.iter().enumerate() {
        if !names_select(names, m) {
            continue;
        }
        let copy = |source: ParamSource, numel: u64, matmul: bool| PlannedParams {
            source,
            numel,
            count: m.count,
            trainable: true,
            origin: ParamOrigin::SavedCopy,
            storage: Storage::Policy,
            matmul_weight: matmul,
        };
        plan.push_group(
            model,
            copy(
                ParamSource::SavedWeight { module: i },
                m.weight_numel(),
                true,
            ),
        );
        if m.bias {
            plan.push_group(
                model,
                copy(ParamSource::SavedBias { module: i }, m.out_features, false),
            );
        }
    }
}

/// The modules whose weight `config.target_parameters` names (component-aligned suffixes of the
/// parameter path: `mlp.experts.gate_up_proj`, or `mlp.router.weight`); a name that matches
/// nothing is peft's "not found" error.
fn parameter_targets(
    regime: &str,
    model: &ModelShape,
    config: &LoraConfig,
) -> Result<Vec<usize>, RegimeError> {
    let ends_with = |path: &str, name: &str| {
        path == name
            || (path.len() > name.len()
                && path.ends_with(name)
                && path.as_bytes()[path.len() - name.len() - 1] == b'.')
    };
    let mut found = Vec::new();
    if config.target_parameters.is_empty() {
        return Ok(found);
    }
    for name in &config.target_parameters {
        let before = found.len();
        for (i, m) in model.modules.iter().enumerate() {
            if m.weight_tied {
                continue;
            }
            let weight = format!("{}.weight", m.path);
            if (ends_with(&m.path, name) || ends_with(&weight, name)) && !found.contains(&i) {
                found.push(i);
            }
        }
        if found.len() == before {
            return Err(shape_err(regime)(ShapeError::Inconsistent {
                field: "target_parameters",
                reason: format!("peft: target parameter `{name}` not found in the base model"),
            }));
        }
    }
    Ok(found)
}

//! LoRA as peft implements it: every targeted Linear keeps its frozen weight and gains
//! `A (r x in)` and `B (out x r)`, `r (in + out)` trainable parameters. The counting rules are
//! peft's (`bias=`, `modules_to_save`, `lora_bias`, DoRA magnitudes), so trainable and all-params
//! figures match `get_nb_trainable_parameters()` to the parameter. QLoRA and DoRA reuse
//! [`LoraConfig`] and [`adapter_plan_into`]; they differ only in base storage and magnitudes.

use ftbudget_core::{
    AdapterHost, AdapterLayout, AdapterPiece, AdapterSite, BaseTraining, BaseTreatment, CountError,
    ModelShape, OptionDoc, OptionReader, ParamKind, ParamOrigin, ParamSource, PieceMatmul,
    PlannedParams, Regime, RegimeError, RegimeRegistration, RegimeSpec, ShapeError, SizeForm,
    Storage, TargetSelection, TargetSpec, TrainingPlan, UnknownName, names_select,
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
        Ok(LoraConfig {
            target_parameters,
            rank,
            targets,
            bias,
            modules_to_save,
            lora_bias,
            dora,
        })
    }

    /// The options that differ from their defaults, as spec text (`r=8,targets=q_proj+v_proj`).
    pub fn spec_options(&self) -> Vec<String> {
        let mut out = vec![format!("r={}", self.rank)];
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
    model
        .check_names(&config.modules_to_save)
        .map_err(shape_err(regime))?;
    let frozen = BaseTreatment {
        training: BaseTraining::Frozen,
        block_linear_storage,
    };
    match config.bias {
        BiasMode::None => plan.set_base(model, frozen),
        BiasMode::All => plan.set_base(
            model,
            BaseTreatment {
                training: BaseTraining::Biases,
                ..frozen
            },
        ),
        // Only the biases of adapted modules: base parameters one by one.
        BiasMode::LoraOnly => {
            for (index, p) in model.params.iter().enumerate() {
                let mut group = frozen.group(model, index);
                if let ParamKind::LinearBias(i) = p.kind {
                    group.trainable = targets.contains(i, &model.modules[i]);
                }
                plan.push_group(model, group);
            }
        }
    }
    // A whole group (all-linear, attn, mlp) in one step from the shape's precomputed sums;
    // otherwise module by module.
    let layout = adapter_layout(config.lora_bias, config.dora);
    let whole_group = !no_modules
        && model
            .group_adapter_units(&config.targets)
            .is_some_and(|units| plan.try_push_group_adapters(units, config.rank, layout));
    if !whole_group {
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
                layout,
            };
            plan.push_adapter(model, site)
                .map_err(|cause| RegimeError::Count {
                    regime: regime.to_string(),
                    cause,
                })?;
        }
    }
    push_parameter_adapters(regime, model, config, &parameter_targets, &targets, plan)?;
    push_saved_copies(model, &config.modules_to_save, plan);
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
        format!("LoRA {}", self.config.label_suffix())
    }

    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError> {
        adapter_plan_into(NAME, model, &self.config, Storage::Policy, out)
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
            layout,
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

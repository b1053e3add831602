//! LoRA as peft implements it: every targeted Linear keeps its frozen weight and gains
//! `A (r x in)` and `B (out x r)`, `r (in + out)` trainable parameters. The counting rules are
//! peft's (`bias=`, `modules_to_save`, `lora_bias`, DoRA magnitudes), so trainable and all-params
//! figures match `get_nb_trainable_parameters()` to the parameter. QLoRA and DoRA reuse
//! [`LoraConfig`] and [`adapter_plan`]; they differ only in base storage and magnitudes.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, ActivationTermKind, AdapterHost, AdapterSite, CountError,
    LinearModule, ModelShape, OptionDoc, OptionReader, ParamKind, ParamOrigin, ParamSource,
    PlannedParams, Regime, RegimeError, RegimeRegistration, RegimeSpec, ShapeError, Storage,
    TargetSpec, TrainingPlan,
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
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "none" => Ok(BiasMode::None),
            "all" => Ok(BiasMode::All),
            "lora_only" | "lora-only" => Ok(BiasMode::LoraOnly),
            _ => Err(()),
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
];

impl LoraConfig {
    /// Read the shared options; `dora` comes from the regime, not the spec.
    pub fn from_reader(reader: &OptionReader<'_>, dora: bool) -> Result<Self, RegimeError> {
        let rank = reader.positive("r", 8, MAX_RANK)?;
        let targets = match reader.raw("targets") {
            None => TargetSpec::AllLinear,
            Some(v) => v
                .parse()
                .map_err(|e: String| reader.invalid("targets", v, &e))?,
        };
        let bias = reader.parse("bias", BiasMode::None, "none, all or lora_only")?;
        let modules_to_save = match reader.raw("modules_to_save") {
            None | Some("") => Vec::new(),
            Some(v) => v.split('+').map(str::to_string).collect(),
        };
        let lora_bias = reader.flag("lora_bias", false)?;
        Ok(LoraConfig {
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
/// `base_linear_storage` decides how each block Linear weight is stored (dense for LoRA, NF4 for
/// QLoRA).
pub fn adapter_plan_into(
    regime: &str,
    model: &ModelShape,
    config: &LoraConfig,
    base_linear_storage: impl Fn(&LinearModule) -> Storage,
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
    let targets = model
        .resolve_targets(&config.targets)
        .map_err(shape_err(regime))?;
    let saved: Vec<usize> = if config.modules_to_save.is_empty() {
        Vec::new()
    } else {
        model
            .resolve_targets(&TargetSpec::Names(config.modules_to_save.clone()))
            .map_err(shape_err(regime))?
    };
    for (index, p) in model.params.iter().enumerate() {
        let trainable = match (config.bias, p.kind) {
            (BiasMode::All, kind) => kind.is_bias(),
            (BiasMode::LoraOnly, ParamKind::LinearBias(i)) => targets.contains(&i),
            _ => false,
        };
        let (storage, matmul) = match p.kind {
            ParamKind::LinearWeight(i) if model.modules[i].in_blocks() => {
                let storage = base_linear_storage(&model.modules[i]);
                (storage, !matches!(storage, Storage::Nf4(_)))
            }
            kind => (
                Storage::Policy,
                ftbudget_full_ft::is_matmul_weight(model, kind),
            ),
        };
        plan.groups.push(PlannedParams {
            source: ParamSource::Base { param: index },
            numel: p.numel,
            count: p.count,
            trainable,
            origin: ParamOrigin::Base,
            storage,
            matmul_weight: matmul,
        });
    }
    for &i in &targets {
        let m = &model.modules[i];
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
        let r = checked(
            regime,
            "lora rank",
            config.rank.checked_mul(m.host.rank_factor()),
        )?;
        let a = checked(regime, "lora_A size", r.checked_mul(m.in_features))?;
        let b = checked(regime, "lora_B size", r.checked_mul(m.out_features))?;
        let adapter = |source: ParamSource, numel: u64| PlannedParams {
            source,
            numel,
            count: m.count,
            trainable: true,
            origin: ParamOrigin::Adapter,
            storage: Storage::Policy,
            matmul_weight: true,
        };
        plan.groups
            .push(adapter(ParamSource::LoraA { module: i }, a));
        plan.groups
            .push(adapter(ParamSource::LoraB { module: i }, b));
        if config.lora_bias {
            let mut bias = adapter(ParamSource::LoraBBias { module: i }, m.out_features);
            bias.matmul_weight = false;
            plan.groups.push(bias);
        }
        if config.dora {
            let mut magnitude = adapter(ParamSource::DoraMagnitude { module: i }, m.out_features);
            magnitude.matmul_weight = false;
            plan.groups.push(magnitude);
        }
        plan.adapters.push(AdapterSite {
            module: i,
            in_features: m.in_features,
            out_features: m.out_features,
            count: m.count,
            rank: r,
            dora: config.dora,
        });
        // x A (b x s x r) is saved for B's backward.
        plan.activation_terms.push(ActivationTerm {
            kind: ActivationTermKind::LoraIntermediate { module: i },
            per_token: checked(regime, "activation size", r.checked_mul(m.count))?,
            fixed: 0,
            dtype: ActivationDtype::Compute,
        });
    }
    for &i in &saved {
        let m = &model.modules[i];
        let copy = |source: ParamSource, numel: u64, matmul: bool| PlannedParams {
            source,
            numel,
            count: m.count,
            trainable: true,
            origin: ParamOrigin::SavedCopy,
            storage: Storage::Policy,
            matmul_weight: matmul,
        };
        plan.groups.push(copy(
            ParamSource::SavedWeight { module: i },
            m.weight_numel(),
            true,
        ));
        if m.bias {
            plan.groups.push(copy(
                ParamSource::SavedBias { module: i },
                m.out_features,
                false,
            ));
        }
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
        format!("LoRA {}", self.config.label_suffix())
    }

    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError> {
        adapter_plan_into(NAME, model, &self.config, |_| Storage::Policy, out)
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
        build,
    }
}

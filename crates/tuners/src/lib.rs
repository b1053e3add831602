//! What the PEFT-method regime crates (IA3, VeRA, LoHa, LoKr, AdaLoRA, OFT, BOFT, FourierFT, LN
//! tuning, prompt/prefix/p-tuning, trainable tokens) share, so that each crate is only its own
//! tensors: peft 0.21.2's default target modules per model type ([`defaults`]), reading a
//! `targets=` option that falls back on them, a frozen base, pushing one adapter per selected
//! module, and peft's refusals (a Conv1D target, a model type without defaults) as one-line
//! errors. It registers no regime.

pub mod defaults;

use defaults::DefaultTargets;
use ftbudget_core::{
    ActivationDtype, ActivationTerm, AdapterSite, BaseTraining, BaseTreatment, LinearLayout,
    LinearModule, ModelShape, OptionReader, RegimeError, ShapeError, Storage, TargetSpec,
    TrainingPlan,
};

/// The base model, frozen and stored as the precision policy says.
pub const FROZEN: BaseTreatment = BaseTreatment {
    training: BaseTraining::Frozen,
    block_linear_storage: Storage::Policy,
    other_storage: Storage::Policy,
};

/// A refusal of `regime`, naming `field`, with peft's reason.
pub fn refusal(regime: &str, field: &'static str, reason: impl Into<String>) -> RegimeError {
    RegimeError::Shape {
        regime: regime.to_string(),
        cause: ShapeError::Inconsistent {
            field,
            reason: reason.into(),
        },
    }
}

/// A shape error of `regime`.
pub fn shape_error(regime: &str, cause: ShapeError) -> RegimeError {
    RegimeError::Shape {
        regime: regime.to_string(),
        cause,
    }
}

/// `targets=` as given (`all-linear`, `attn`, `mlp` or `a+b+c`), or `None` when absent: peft
/// then uses its default for the model type ([`Targets::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(pub Option<TargetSpec>);

impl Targets {
    pub fn read(reader: &OptionReader<'_>, key: &str) -> Result<Self, RegimeError> {
        match reader.raw(key) {
            None => Ok(Targets(None)),
            Some(v) => {
                v.parse()
                    .map(|t| Targets(Some(t)))
                    .map_err(|e: ftbudget_core::TargetSpecError| {
                        reader.invalid(key, v, &e.to_string())
                    })
            }
        }
    }

    /// The spec option text (`,targets=...`), empty when absent.
    pub fn spec_suffix(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(t) => format!(",targets={t}"),
        }
    }

    /// The targets on `model`: the given ones, or peft's default for its model type from
    /// `table` (peft refuses a model type it has no default for).
    pub fn resolve(
        &self,
        regime: &str,
        table: DefaultTargets,
        model: &ModelShape,
    ) -> Result<TargetSpec, RegimeError> {
        if let Some(t) = &self.0 {
            return Ok(t.clone());
        }
        default_names(regime, table, model)
            .map(|names| TargetSpec::Names(names.iter().map(|n| n.to_string()).collect()))
    }
}

/// peft's default names for `model`'s type in `table`, or peft's refusal.
pub fn default_names(
    regime: &str,
    table: DefaultTargets,
    model: &ModelShape,
) -> Result<&'static [&'static str], RegimeError> {
    let model_type = model.family.name();
    table
        .iter()
        .find(|(t, _)| *t == model_type)
        .map(|(_, names)| *names)
        .ok_or_else(|| {
            // peft: "Please specify `target_modules` in `peft_config`".
            refusal(
                regime,
                "targets",
                format!(
                    "peft has no default target modules for model type `{model_type}`; give targets= (peft: Please specify `target_modules` in `peft_config`)"
                ),
            )
        })
}

/// The indices of the modules `targets` selects on `model`, checked as peft checks them.
pub fn selected_modules(
    regime: &str,
    model: &ModelShape,
    targets: &TargetSpec,
) -> Result<Vec<usize>, RegimeError> {
    let selection = model
        .select_targets(targets)
        .map_err(|cause| shape_error(regime, cause))?;
    Ok(model
        .modules
        .iter()
        .enumerate()
        .filter(|(i, m)| selection.contains(*i, m))
        .map(|(i, _)| i)
        .collect())
}

/// peft's refusal of a tuner on a GPT-2 `Conv1D` (its first error line, `message`), when one
/// of `modules` is one.
pub fn refuse_conv1d(
    regime: &str,
    model: &ModelShape,
    modules: &[usize],
    message: impl Fn(&LinearModule) -> String,
) -> Result<(), RegimeError> {
    match modules
        .iter()
        .map(|&i| &model.modules[i])
        .find(|m| m.layout == LinearLayout::Conv1D)
    {
        Some(m) => Err(refusal(
            regime,
            "targets",
            format!("`{}` is a GPT-2 Conv1D (peft: {})", m.name, message(m)),
        )),
        None => Ok(()),
    }
}

/// peft's refusal of a tuner on a parameter host (fused MoE experts, routers: peft's
/// `target_parameters` exist for LoRA only).
pub fn refuse_parameter_hosts(
    regime: &str,
    model: &ModelShape,
    modules: &[usize],
) -> Result<(), RegimeError> {
    match modules
        .iter()
        .map(|&i| &model.modules[i])
        .find(|m| m.host != ftbudget_core::AdapterHost::Module)
    {
        Some(m) => Err(refusal(
            regime,
            "targets",
            format!(
                "`{}` is a fused expert or router parameter, which peft adapts only with LoRA (target_parameters)",
                m.target_names.join("+")
            ),
        )),
        None => Ok(()),
    }
}

/// Push one adapter, naming `regime` in an overflow error.
pub fn push(
    regime: &str,
    model: &ModelShape,
    plan: &mut TrainingPlan,
    site: AdapterSite,
) -> Result<(), RegimeError> {
    plan.push_adapter(model, site)
        .map_err(|cause| RegimeError::Count {
            regime: regime.to_string(),
            cause,
        })
}

/// `a * b`, or a count error of `regime` naming `what`.
pub fn mul(regime: &str, what: &'static str, a: u64, b: u64) -> Result<u64, RegimeError> {
    a.checked_mul(b).ok_or_else(|| RegimeError::Count {
        regime: regime.to_string(),
        cause: ftbudget_core::CountError { what },
    })
}

/// The instances of `model.modules[module]` whose input needs a gradient: all of them but the
/// first block's attention-input Linears (q, k, v), whose input, with the embedding frozen as
/// every method here keeps it, depends on nothing trained. There a matmul keeps its
/// weight-sized operand only for the input's gradient, so those instances do not keep it.
pub fn input_grad_instances(model: &ModelShape, module: usize) -> u64 {
    let m = &model.modules[module];
    if m.reads_attention_input {
        m.count - m.first_block_instances(model.dims.layers).min(m.count)
    } else {
        m.count
    }
}

/// What an adapter's forward keeps per module instance that does not grow with the tokens
/// (rotation blocks, a materialized update), in elements of `size` each: `every` copies on
/// every instance and `grad` more on the instances whose input needs a gradient
/// ([`input_grad_instances`]), both in the compute dtype, and `autocast` copies on every
/// instance that only autocast makes (16-bit casts of fp32 operands for `bmm`, `einsum` or
/// `linear`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightTerms {
    pub name: &'static str,
    pub size: u64,
    pub every: u64,
    pub grad: u64,
    pub autocast: u64,
}

impl WeightTerms {
    /// Push the terms for the adapter on `module`, naming `regime` in an overflow error.
    pub fn push(
        &self,
        regime: &str,
        model: &ModelShape,
        plan: &mut TrainingPlan,
        module: usize,
    ) -> Result<(), RegimeError> {
        let m = &model.modules[module];
        let grad = input_grad_instances(model, module);
        let copies = |per: u64, instances: u64| {
            mul(regime, self.name, self.size, per)
                .and_then(|n| mul(regime, self.name, n, instances))
        };
        let compute = copies(self.every, m.count)?
            .checked_add(copies(self.grad, grad)?)
            .ok_or_else(|| RegimeError::Count {
                regime: regime.to_string(),
                cause: ftbudget_core::CountError { what: self.name },
            })?;
        if compute > 0 {
            plan.push_activation_term(ActivationTerm {
                name: self.name,
                module: Some(module),
                per_token: 0,
                fixed: compute,
                dtype: ActivationDtype::Compute,
                freed_in_forward: false,
            });
        }
        if self.autocast > 0 {
            plan.push_activation_term(ActivationTerm {
                name: self.name,
                module: Some(module),
                per_token: 0,
                fixed: copies(self.autocast, m.count)?,
                dtype: ActivationDtype::AutocastCopy,
                freed_in_forward: false,
            });
        }
        Ok(())
    }
}

/// A `name+name` list option (empty for `key=`), or `None` when absent.
pub fn name_list(reader: &OptionReader<'_>, key: &str) -> Option<Vec<String>> {
    reader.raw(key).map(|v| {
        v.split('+')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Does a peft target name select the module at `path` (equal, or a suffix after a dot)?
pub fn path_matches(path: &str, name: &str) -> bool {
    path == name || path.ends_with(&format!(".{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table equals peft's mapping as `methods.py` recorded it.
    #[test]
    fn default_tables_are_pefts() {
        let text = include_str!("../../../fixtures/peft/methods_counts.json");
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        let recorded = &json["defaults"];
        for (method, table) in [
            ("ia3", defaults::IA3),
            ("ia3-feedforward", defaults::IA3_FEEDFORWARD),
            ("vera", defaults::VERA),
            ("loha", defaults::LOHA),
            ("lokr", defaults::LOKR),
            ("adalora", defaults::ADALORA),
            ("oft", defaults::OFT),
            ("boft", defaults::BOFT),
            ("fourierft", defaults::FOURIERFT),
            ("ln-tuning", defaults::LN_TUNING),
        ] {
            let map = recorded[method].as_object().unwrap();
            let lists = map.values().filter(|v| v.is_array()).count();
            assert_eq!(lists, table.len(), "{method}");
            for (model_type, names) in table {
                let peft: Vec<&str> = map[*model_type]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(peft, *names, "{method} {model_type}");
            }
        }
    }

    #[test]
    fn suffix_matching() {
        assert!(path_matches("model.norm", "norm"));
        assert!(path_matches(
            "model.layers.*.input_layernorm",
            "input_layernorm"
        ));
        assert!(!path_matches("model.layers.*.input_layernorm", "layernorm"));
    }
}

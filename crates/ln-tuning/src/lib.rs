//! LN tuning (Zhao et al. 2024) as peft's `LNTuningConfig` builds it: the base is frozen and
//! every targeted module (the normalization layers by default: peft's per-model-type list,
//! `input_layernorm, post_attention_layernorm, norm` on LLaMA) gets a trainable copy
//! (`ln_tuning_layers`) used in its place: the copies' parameters train, and peft's all-params
//! counts both the originals and the copies. A targeted Linear is copied the same way.
//! Activations: each trained norm keeps its normalized input (`width` per token, fp32), which
//! the frozen model does not.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, DType, ModelShape, OptionDoc, OptionReader, ParamKind,
    ParamOrigin, ParamSource, PlannedParams, Regime, RegimeError, RegimeRegistration, RegimeSpec,
    Storage, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, defaults, path_matches, refusal};

pub const NAME: &str = "ln-tuning";

const OPTIONS: &[OptionDoc] = &[OptionDoc {
    key: "targets",
    values: "name+name...",
    default: "peft's per model type",
    help: "modules given a trainable copy (peft's target_modules; LLaMA: input_layernorm+post_attention_layernorm+norm)",
}];

pub struct LnTuning {
    targets: Option<Vec<String>>,
}

/// The module a parameter belongs to: its name without the last component.
fn module_path(param: &str) -> &str {
    param.rsplit_once('.').map_or(param, |(module, _)| module)
}

impl Regime for LnTuning {
    fn spec(&self) -> String {
        match &self.targets {
            Some(t) => format!("{NAME}:targets={}", t.join("+")),
            None => NAME.to_string(),
        }
    }

    fn label(&self) -> String {
        "LN tuning".into()
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let names: Vec<String> = match &self.targets {
            Some(t) => t.clone(),
            None => ftbudget_tuners::default_names(NAME, defaults::LN_TUNING, model)?
                .iter()
                .map(|n| n.to_string())
                .collect(),
        };
        plan.set_base(model, FROZEN);
        let mut matched = false;
        // A trained norm weight's backward keeps the normalized input (a copied Linear, its
        // input): what the frozen model did not save. Measured fp32 (the residual stream's
        // dtype with fp32 weights).
        let mut saved_per_token = 0u64;
        for (param, p) in model.params.iter().enumerate() {
            let copied = match p.kind {
                ParamKind::NormWeight | ParamKind::NormBias | ParamKind::Other => {
                    let module = module_path(&p.name);
                    names.iter().any(|n| path_matches(module, n))
                }
                ParamKind::LinearWeight(i) | ParamKind::LinearBias(i) => {
                    let m = &model.modules[i];
                    !m.weight_tied && names.iter().any(|n| path_matches(&m.path, n))
                }
                ParamKind::Embedding | ParamKind::PositionEmbedding => false,
            };
            if !copied {
                continue;
            }
            matched = true;
            let per_token = match p.kind {
                ParamKind::NormWeight | ParamKind::Other => p.numel,
                ParamKind::LinearWeight(i) => model.modules[i].in_features,
                _ => 0,
            };
            saved_per_token = saved_per_token.saturating_add(per_token.saturating_mul(p.count));
            plan.push_group(
                model,
                PlannedParams {
                    source: ParamSource::Base { param },
                    numel: p.numel,
                    count: p.count,
                    trainable: true,
                    origin: ParamOrigin::SavedCopy,
                    storage: Storage::Policy,
                    matmul_weight: matches!(p.kind, ParamKind::LinearWeight(_)),
                },
            );
        }
        plan.push_activation_term(ActivationTerm {
            name: "ln-tuning normalized inputs",
            module: None,
            per_token: saved_per_token,
            fixed: 0,
            dtype: ActivationDtype::Dense(DType::F32),
            freed_in_forward: false,
        });
        if !matched {
            return Err(refusal(
                NAME,
                "targets",
                format!(
                    "peft: Target modules {{{}}} not found in the base model. Please check the target modules and try again.",
                    names
                        .iter()
                        .map(|n| format!("'{n}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    let targets = ftbudget_tuners::name_list(&reader, "targets");
    if targets.as_ref().is_some_and(Vec::is_empty) {
        return Err(reader.invalid("targets", "", "a module name list"));
    }
    Ok(Box::new(LnTuning { targets }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "LN tuning: frozen base, trainable copies of the normalization layers (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

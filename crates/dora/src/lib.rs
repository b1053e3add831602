//! DoRA (Liu et al. 2024) as peft's `use_dora=True`: LoRA's A and B plus one trainable magnitude
//! per output feature of every adapted module. The forward pass also computes the column norm of
//! `W + B A`, a weight-sized temporary per adapted module, which this regime adds to activations.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, CountError, ModelShape, OptionReader, Regime, RegimeError,
    RegimeRegistration, RegimeSpec, Storage, TrainingPlan,
};
use ftbudget_lora::{LORA_OPTIONS, LoraConfig, adapter_plan_into};

pub const NAME: &str = "dora";

pub struct Dora {
    pub config: LoraConfig,
}

impl Regime for Dora {
    fn spec(&self) -> String {
        format!("{NAME}:{}", self.config.spec_options().join(","))
    }

    fn label(&self) -> String {
        format!("DoRA {}", self.config.label_suffix())
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        let storage = if self.config.base_int8 {
            Storage::Int8
        } else {
            Storage::Policy
        };
        adapter_plan_into(NAME, model, &self.config, storage, plan)?;
        // Measured (peft 0.21, `fixtures/memory`): DoRA feeds `eye(in)` through lora_A and
        // lora_B to get the LoRA weight (saving `in x in` and `in x r`), saves the base and LoRA
        // outputs for the magnitude scaling (`2 T out`), and a few fp32 `out`-sized norms.
        for i in 0..plan.adapters().len() {
            let site = plan.adapters()[i];
            let m = &model.modules[site.module];
            // The instances this adapter sits on (fewer than the module's with `layers=`).
            let instances = plan.adapter_instance_count(model, i);
            // (`out x count` and `in x out x count` are bounded by the shape's checks; this
            // product is not.)
            let fixed = m
                .in_features
                .checked_add(site.rank)
                .and_then(|n| n.checked_mul(m.in_features))
                .and_then(|n| n.checked_mul(instances))
                .ok_or_else(|| RegimeError::Count {
                    regime: NAME.to_string(),
                    cause: CountError {
                        what: "dora weight-norm activation size",
                    },
                })?;
            let conv1d = m.layout == ftbudget_core::LinearLayout::Conv1D;
            // peft subtracts the base layer's bias from its output before the magnitude scaling:
            // under autocast the 16-bit output minus the fp32 bias is an fp32 tensor, so one of
            // the two saved outputs of a biased module is fp32 (measured on GPT-2's Conv1D and
            // Phi's biased Linears).
            let outputs_in_compute = if conv1d || m.bias { 1 } else { 2 };
            plan.push_activation_term(ActivationTerm {
                name: "dora weight norm",
                module: Some(site.module),
                per_token: outputs_in_compute * m.out_features * instances,
                fixed,
                dtype: ActivationDtype::Compute,
                freed_in_forward: true,
            });
            plan.push_activation_term(ActivationTerm {
                name: "dora fp32 norms",
                module: Some(site.module),
                per_token: (2 - outputs_in_compute) * m.out_features * instances,
                fixed: 3 * m.out_features * instances,
                dtype: ActivationDtype::Dense(ftbudget_core::DType::F32),
                freed_in_forward: true,
            });
            // GPT-2's Conv1D (peft fan_in_fan_out): the transposed fp32 base weight is saved too.
            if conv1d {
                plan.push_activation_term(ActivationTerm {
                    name: "dora transposed weight",
                    module: Some(site.module),
                    per_token: 0,
                    fixed: m.in_features * m.out_features * instances,
                    dtype: ActivationDtype::Dense(ftbudget_core::DType::F32),
                    freed_in_forward: true,
                });
            }
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, LORA_OPTIONS)?;
    Ok(Box::new(Dora {
        config: LoraConfig::from_reader(&reader, true)?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "DoRA: LoRA plus a trainable magnitude per output feature (peft use_dora)",
        options: LORA_OPTIONS,
        rank_option: Some("r"),
        build,
    }
}

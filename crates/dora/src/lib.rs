//! DoRA (Liu et al. 2024) as peft's `use_dora=True`: LoRA's A and B plus one trainable magnitude
//! per output feature of every adapted module. The forward pass also computes the column norm of
//! `W + B A`, a weight-sized temporary per adapted module, which this regime adds to activations.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, ActivationTermKind, ModelShape, OptionReader, Regime,
    RegimeError, RegimeRegistration, RegimeSpec, Storage, TrainingPlan,
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
        adapter_plan_into(NAME, model, &self.config, |_| Storage::Policy, plan)?;
        let largest = plan
            .adapters
            .iter()
            .max_by_key(|a| a.in_features * a.out_features)
            .copied();
        if let Some(site) = largest {
            plan.activation_terms.push(ActivationTerm {
                kind: ActivationTermKind::DoraWeightNorm {
                    module: site.module,
                },
                per_token: 0,
                fixed: site.in_features * site.out_features,
                dtype: ActivationDtype::Compute,
            });
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
        build,
    }
}

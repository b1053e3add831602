//! Prompt tuning (Lester et al. 2021) as peft's `PromptTuningConfig` builds it: the base is
//! frozen; `virtual_tokens` trainable embeddings of `hidden` (`prompt_encoder.embedding`) are
//! prepended to every sequence, so activations are those of `seq + virtual_tokens` tokens.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, DType, ModelShape, OptionDoc, OptionReader, Regime,
    RegimeError, RegimeRegistration, RegimeSpec, TrainingPlan,
};
use ftbudget_tuners::FROZEN;

pub const NAME: &str = "prompt-tuning";

/// The most virtual tokens accepted.
pub const MAX_TOKENS: u64 = 1 << 20;

const OPTIONS: &[OptionDoc] = &[OptionDoc {
    key: "virtual_tokens",
    values: "<int>",
    default: "20",
    help: "virtual tokens prepended to the input (peft's num_virtual_tokens)",
}];

pub struct PromptTuning {
    virtual_tokens: u64,
}

impl Regime for PromptTuning {
    fn spec(&self) -> String {
        format!("{NAME}:virtual_tokens={}", self.virtual_tokens)
    }

    fn label(&self) -> String {
        format!("prompt tuning {} tokens", self.virtual_tokens)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        plan.set_base(model, FROZEN);
        let numel = ftbudget_tuners::mul(
            NAME,
            "prompt_encoder.embedding.weight",
            self.virtual_tokens,
            model.dims.hidden,
        )?;
        plan.push_extra_params(model, "prompt_encoder.embedding.weight", numel, 1, true);
        plan.add_extra_tokens(self.virtual_tokens);
        // The embedding output now needs a gradient: the first block's norm keeps its input
        // (the fp32 residual stream), which a frozen embedding spares.
        plan.push_activation_term(ActivationTerm {
            name: "first norm input",
            module: None,
            per_token: model.dims.hidden,
            fixed: 0,
            dtype: ActivationDtype::Dense(DType::F32),
            freed_in_forward: false,
        });
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    Ok(Box::new(PromptTuning {
        virtual_tokens: reader.positive("virtual_tokens", 20, MAX_TOKENS)?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "prompt tuning: frozen base, trainable virtual-token embeddings (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

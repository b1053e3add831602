//! AdaLoRA (Zhang et al. 2023) as peft's `AdaLoraConfig` builds it: the base is frozen and every
//! targeted Linear gains an SVD-shaped adapter at the initial rank `init_r`: `lora_A (r x in)`,
//! `lora_B (out x r)`, the singular values `lora_E (r x 1)` (`r (in + out + 1)` trainable per
//! module) and `ranknum`, a frozen one-element parameter (peft creates it with
//! `requires_grad=False`; only a model built on the meta device shows it trainable). Pruning towards
//! `target_r` masks singular values during training and never frees a tensor, so the counts and
//! memory are those of `init_r`. Activations: LoRA's `x A` (`r` per token) and the fixed
//! product `A * E` (`r x in`) per module.

use ftbudget_core::{
    AdapterLayout, AdapterPiece, AdapterSite, ModelShape, OptionDoc, OptionReader, PieceMatmul,
    PieceRole, Regime, RegimeError, RegimeRegistration, RegimeSpec, SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, selected_modules};

pub const NAME: &str = "adalora";

/// The largest rank accepted.
pub const MAX_RANK: u64 = 1 << 20;

const ADALORA: AdapterLayout = AdapterLayout::new("adalora", SizeForm::RANK)
    .with(AdapterPiece::trainable(
        "lora_A",
        SizeForm::RANK_IN,
        PieceMatmul::Input,
    ))
    .with(AdapterPiece::trainable(
        "lora_B",
        SizeForm::RANK_OUT,
        PieceMatmul::Inner,
    ))
    .with(AdapterPiece::trainable(
        "lora_E",
        SizeForm::RANK,
        PieceMatmul::No,
    ))
    .with(AdapterPiece {
        name: "ranknum",
        size: SizeForm::constant(1),
        role: PieceRole::Frozen,
        matmul: PieceMatmul::No,
    });

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "init_r",
        values: "<int>",
        default: "12",
        help: "initial rank of every adapter (what is allocated)",
    },
    OptionDoc {
        key: "target_r",
        values: "<int>",
        default: "8",
        help: "average rank after pruning (masks singular values; no effect on memory)",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct Adalora {
    init_r: u64,
    target_r: u64,
    targets: Targets,
}

impl Regime for Adalora {
    fn spec(&self) -> String {
        format!(
            "{NAME}:init_r={},target_r={}{}",
            self.init_r,
            self.target_r,
            self.targets.spec_suffix()
        )
    }

    fn label(&self) -> String {
        format!("AdaLoRA r={}->{}", self.init_r, self.target_r)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::ADALORA, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        for module in modules {
            let site = AdapterSite {
                module,
                rank: self.init_r,
                layout: &ADALORA,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // `x @ (A * E).T` keeps the product where the input needs a gradient.
            let m = &model.modules[module];
            ftbudget_tuners::WeightTerms {
                name: "adalora A * E",
                size: ftbudget_tuners::mul(NAME, "lora_A", self.init_r, m.in_features)?,
                every: 0,
                grad: 1,
                autocast: 0,
            }
            .push(NAME, model, plan, module)?;
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    Ok(Box::new(Adalora {
        init_r: reader.positive("init_r", 12, MAX_RANK)?,
        target_r: reader.positive("target_r", 8, MAX_RANK)?,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "AdaLoRA: frozen base, SVD-shaped adapters at init_r pruned towards target_r (peft)",
        options: OPTIONS,
        rank_option: Some("init_r"),
        build,
    }
}

//! LoHa (Hyeon-Woo et al. 2022, LyCORIS) as peft's `LoHaConfig` builds it on Linears: the base
//! is frozen and every targeted Linear gains four trainable factors, `hada_w1_a`, `hada_w2_a`
//! (`out x r`) and `hada_w1_b`, `hada_w2_b` (`r x in`): `2 r (in + out)` per module, twice
//! LoRA's. The update `(w1_a w1_b) * (w2_a w2_b)` is a full `out x in` matrix per adapted
//! module, an activation term (measured: about one weight-sized tensor kept per module).
//! peft refuses GPT-2's Conv1D.

use ftbudget_core::{
    AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite, ModelShape, OptionDoc, OptionReader,
    PieceMatmul, Regime, RegimeError, RegimeRegistration, RegimeSpec, SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, refuse_conv1d, selected_modules};

pub const NAME: &str = "loha";

/// The largest rank accepted.
pub const MAX_RANK: u64 = 1 << 20;

/// The four factors in peft's order; nothing saved per token beyond the base's input.
const LOHA: AdapterLayout = AdapterLayout::new("loha", SizeForm::ZERO)
    .with_output(AdapterOutput::InputDtype)
    .with(AdapterPiece::trainable(
        "hada_w1_a",
        SizeForm::RANK_OUT,
        PieceMatmul::Inner,
    ))
    .with(AdapterPiece::trainable(
        "hada_w1_b",
        SizeForm::RANK_IN,
        PieceMatmul::Inner,
    ))
    .with(AdapterPiece::trainable(
        "hada_w2_a",
        SizeForm::RANK_OUT,
        PieceMatmul::Inner,
    ))
    .with(AdapterPiece::trainable(
        "hada_w2_b",
        SizeForm::RANK_IN,
        PieceMatmul::Inner,
    ));

/// peft's first error line for a Conv1D target.
pub const CONV1D_REFUSAL: &str = "Target module of type <class 'transformers.pytorch_utils.Conv1D'> not supported, currently only adapters for Conv2d, Conv1d, Linear are supported";

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "r",
        values: "<int>",
        default: "8",
        help: "rank of each of the two products",
    },
    OptionDoc {
        key: "alpha",
        values: "<int>",
        default: "8",
        help: "scaling numerator (no effect on counts or memory)",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct Loha {
    rank: u64,
    alpha: u64,
    targets: Targets,
}

impl Regime for Loha {
    fn spec(&self) -> String {
        format!(
            "{NAME}:r={},alpha={}{}",
            self.rank,
            self.alpha,
            self.targets.spec_suffix()
        )
    }

    fn label(&self) -> String {
        format!("LoHa r={}", self.rank)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::LOHA, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        refuse_conv1d(NAME, model, &modules, |_| CONV1D_REFUSAL.to_string())?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        for module in modules {
            let site = AdapterSite {
                module,
                rank: self.rank,
                layout: &LOHA,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // The Hadamard update is built per forward and read by a `linear` on the module
            // input (kept as LoRA keeps it for A): the `linear` keeps the update (its 16-bit
            // cast under autocast) where the input needs a gradient.
            ftbudget_tuners::WeightTerms {
                name: "loha update",
                size: model.modules[module].weight_numel(),
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
    Ok(Box::new(Loha {
        rank: reader.positive("r", 8, MAX_RANK)?,
        alpha: reader.positive("alpha", 8, u64::from(u32::MAX))?,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "LoHa: frozen base, Hadamard product of two rank-r products per Linear (peft)",
        options: OPTIONS,
        rank_option: Some("r"),
        build,
    }
}

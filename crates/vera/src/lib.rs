//! VeRA (Kopiczko et al. 2024) as peft's `VeraConfig` builds it: the base is frozen; one pair of
//! random projections `vera_A (r x in_max)` and `vera_B (out_max x r)`, shared by every adapted
//! Linear (sliced to each one's size), is held as fp32 buffers, not parameters; each adapted
//! Linear trains only two scaling vectors, `vera_lambda_b` (`out`) and `vera_lambda_d` (`r`).
//! Activations: `x A` and its scaled copy (`r` each) and `(...) B` (`out`) per token.

use ftbudget_core::{
    AdapterInput, AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite, DType, ModelShape,
    OptionDoc, OptionReader, PieceMatmul, Regime, RegimeError, RegimeRegistration, RegimeSpec,
    SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, selected_modules};

pub const NAME: &str = "vera";

/// The largest rank accepted.
pub const MAX_RANK: u64 = 1 << 20;

/// One adapted Linear: the two trainable vectors in peft's order. Per token it keeps `x A`
/// (`r`, for `lambda_d`) and `(..) B` (`out`, for `lambda_b`); the projections are frozen
/// buffers, so neither `linear` keeps its input (the module input is not kept for VeRA).
const VERA: AdapterLayout = AdapterLayout::new("vera", SizeForm::RANK.plus(SizeForm::OUT))
    .with_output(AdapterOutput::InputDtype)
    .with_input(AdapterInput::Declared)
    .with(AdapterPiece::trainable(
        "vera_lambda_b",
        SizeForm::OUT,
        PieceMatmul::No,
    ))
    .with(AdapterPiece::trainable(
        "vera_lambda_d",
        SizeForm::RANK,
        PieceMatmul::No,
    ));

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "r",
        values: "<int>",
        default: "256",
        help: "rank of the shared projections",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct Vera {
    rank: u64,
    targets: Targets,
}

impl Regime for Vera {
    fn spec(&self) -> String {
        format!("{NAME}:r={}{}", self.rank, self.targets.spec_suffix())
    }

    fn label(&self) -> String {
        format!("VeRA r={}", self.rank)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::VERA, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        let (mut in_max, mut out_max) = (0, 0);
        for &module in &modules {
            let m = &model.modules[module];
            in_max = in_max.max(m.in_features);
            out_max = out_max.max(m.out_features);
            let site = AdapterSite {
                module,
                rank: self.rank,
                layout: &VERA,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // Under autocast each `linear` keeps the 16-bit cast of its sliced projection.
            let r = self.rank;
            for (name, size) in [
                (
                    "vera_A cast",
                    ftbudget_tuners::mul(NAME, "vera_A", r, m.in_features)?,
                ),
                (
                    "vera_B cast",
                    ftbudget_tuners::mul(NAME, "vera_B", r, m.out_features)?,
                ),
            ] {
                ftbudget_tuners::WeightTerms {
                    name,
                    size,
                    every: 0,
                    grad: 0,
                    autocast: 1,
                }
                .push(NAME, model, plan, module)?;
            }
        }
        // One pair for the whole model (peft's BufferDict, sized by the largest adapted layer).
        let a = ftbudget_tuners::mul(NAME, "vera_A", self.rank, in_max)?;
        let b = ftbudget_tuners::mul(NAME, "vera_B", out_max, self.rank)?;
        plan.push_buffer(model, "vera_A", a, 1, DType::F32);
        plan.push_buffer(model, "vera_B", b, 1, DType::F32);
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    Ok(Box::new(Vera {
        rank: reader.positive("r", 256, MAX_RANK)?,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "VeRA: shared frozen random projections (buffers), trainable scaling vectors (peft)",
        options: OPTIONS,
        rank_option: Some("r"),
        build,
    }
}

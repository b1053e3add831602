//! FourierFT (Gao et al. 2024) as peft's `FourierFTConfig` builds it: the base is frozen and
//! every targeted Linear trains `n_frequency` spectral coefficients `fourierft_spectrum` at
//! random frequencies; their locations are an int64 `2 x n` tensor per module (`indices`, held
//! on the device though peft keeps it in a dict, not as a buffer). The update is the real part
//! of the inverse 2-D FFT of the dense `out x in` spectrum, computed in fp32: measured about
//! one fp32 `out x in` tensor kept per adapted module.

use ftbudget_core::{
    AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite, DType, ModelShape, OptionDoc,
    OptionReader, PieceMatmul, PieceRole, Regime, RegimeError, RegimeRegistration, RegimeSpec,
    SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, refusal, selected_modules};

pub const NAME: &str = "fourierft";

/// The largest `n_frequency` accepted.
pub const MAX_FREQUENCIES: u64 = 1 << 40;

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "n_frequency",
        values: "<int>",
        default: "1000",
        help: "trainable spectral coefficients per adapted Linear",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct FourierFt {
    n_frequency: u64,
    targets: Targets,
}

impl Regime for FourierFt {
    fn spec(&self) -> String {
        format!(
            "{NAME}:n_frequency={}{}",
            self.n_frequency,
            self.targets.spec_suffix()
        )
    }

    fn label(&self) -> String {
        format!("FourierFT n={}", self.n_frequency)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::FOURIERFT, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        let n = self.n_frequency;
        let layout = AdapterLayout::new("fourierft", SizeForm::ZERO)
            .with_output(AdapterOutput::InputDtype)
            .with(AdapterPiece::trainable(
                "fourierft_spectrum",
                SizeForm::constant(n),
                PieceMatmul::No,
            ))
            .with(AdapterPiece {
                name: "indices",
                size: SizeForm::constant(2 * n),
                role: PieceRole::Buffer { dtype: DType::I64 },
                matmul: PieceMatmul::No,
            })
            .interned();
        plan.set_base(model, FROZEN);
        for module in modules {
            let m = &model.modules[module];
            let product = m.weight_numel();
            if n > product {
                return Err(refusal(
                    NAME,
                    "n_frequency",
                    format!(
                        "peft: `n_frequency` should be less than or equal to the product of the input and output dimensions but the value passed is {n} and the product is {product}"
                    ),
                ));
            }
            let site = AdapterSite {
                module,
                rank: 0,
                layout,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // The inverse FFT's real part is the dense update, read by a `linear` on the module
            // input (kept as LoRA keeps it for A): the `linear` keeps the update (its 16-bit
            // cast under autocast) where the input needs a gradient; the FFT keeps nothing.
            ftbudget_tuners::WeightTerms {
                name: "fourierft update",
                size: product,
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
    Ok(Box::new(FourierFt {
        n_frequency: reader.positive("n_frequency", 1000, MAX_FREQUENCIES)?,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "FourierFT: frozen base, trainable spectral coefficients per Linear (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

//! OFT (Qiu et al. 2023) as peft 0.21's `OFTConfig` builds it on Linears: the base is frozen and
//! every targeted Linear's input is rotated by a block-diagonal orthogonal matrix of `r` blocks
//! of `b x b` (`r b = in`; give one of `r` and `block_size`, peft's `oft_block_size`), each block
//! the Cayley transform of a skew-symmetric matrix stored as its upper triangle: `oft_R.weight`
//! (`r x n`, `n = b (b - 1) / 2`) trains, and two int64 index buffers (`rows`, `cols`, `n` each)
//! locate it. A block size that does not divide `in` is moved to the nearest divisor, as peft
//! does (with a warning). Activations: the module input, kept for the rotation as LoRA keeps it
//! for A; the Cayley-Neumann terms and the orthogonal blocks (`r b^2` each) per module; the
//! adapted Linear returns the input's dtype (fp32 under autocast).
//! peft refuses GPT-2's Conv1D.

use ftbudget_core::{
    AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite, DType, ModelShape, OptionDoc,
    OptionReader, PieceMatmul, PieceRole, Regime, RegimeError, RegimeRegistration, RegimeSpec,
    SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, refusal, refuse_conv1d, selected_modules};

pub const NAME: &str = "oft";

/// The largest `r` or block size accepted.
pub const MAX_BLOCK: u64 = 1 << 20;

/// peft's first error line for a Conv1D target.
pub fn conv1d_refusal(out_features: u64, in_features: u64) -> String {
    format!(
        "Target module Conv1D(nf={out_features}, nx={in_features}) is not supported. Currently, only `torch.nn.Linear`, `torch.nn.Conv2d`, `torch.nn.Embedding` (optionally quantized) are supported."
    )
}

/// peft's `adjust_oft_parameters`: the divisor of `in_features` nearest `params` (the lower one
/// on a tie), or `in_features` when `params` is not below it.
pub fn adjust(in_features: u64, params: u64) -> u64 {
    if params >= in_features {
        return in_features;
    }
    let mut higher = params;
    while higher <= in_features && !in_features.is_multiple_of(higher) {
        higher += 1;
    }
    let mut lower = params;
    while lower > 1 && !in_features.is_multiple_of(lower) {
        lower -= 1;
    }
    if params - lower <= higher - params {
        lower
    } else {
        higher
    }
}

/// `(r, block size)` on a Linear of `in_features`, as peft's `update_layer` settles them.
pub fn blocks(in_features: u64, r: u64, block_size: u64) -> (u64, u64) {
    if r == 0 {
        let b = if !in_features.is_multiple_of(block_size) || block_size > in_features {
            adjust(in_features, block_size)
        } else {
            block_size
        };
        (in_features / b, b)
    } else {
        let r = if !in_features.is_multiple_of(r) || r > in_features {
            adjust(in_features, r)
        } else {
            r
        };
        (r, in_features / r)
    }
}

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "r",
        values: "<int>",
        default: "0",
        help: "number of blocks (peft's r; give r or block_size, the other 0)",
    },
    OptionDoc {
        key: "block_size",
        values: "<int>",
        default: "32",
        help: "block size (peft's oft_block_size)",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct Oft {
    r: u64,
    block_size: u64,
    targets: Targets,
}

impl Regime for Oft {
    fn spec(&self) -> String {
        format!(
            "{NAME}:r={},block_size={}{}",
            self.r,
            self.block_size,
            self.targets.spec_suffix()
        )
    }

    fn label(&self) -> String {
        if self.r == 0 {
            format!("OFT b={}", self.block_size)
        } else {
            format!("OFT r={}", self.r)
        }
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::OFT, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        refuse_conv1d(NAME, model, &modules, |m| {
            conv1d_refusal(m.out_features, m.in_features)
        })?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        for module in modules {
            let m = &model.modules[module];
            let (r, b) = blocks(m.in_features, self.r, self.block_size);
            let n = b * (b - 1) / 2;
            let weight = ftbudget_tuners::mul(NAME, "oft_R.weight", r, n)?;
            let index = AdapterPiece {
                name: "oft_R.rows",
                size: SizeForm::constant(n),
                role: PieceRole::Buffer { dtype: DType::I64 },
                matmul: PieceMatmul::No,
            };
            // The rotation reads the module input (`einsum`), which is kept as LoRA's A keeps
            // it (one 16-bit cast per adapter under autocast): no per-token term of its own.
            let layout = AdapterLayout::new("oft", SizeForm::ZERO)
                .with_output(AdapterOutput::InputDtype)
                .with(AdapterPiece::trainable(
                    "oft_R.weight",
                    SizeForm::constant(weight),
                    PieceMatmul::No,
                ))
                .with(index)
                .with(AdapterPiece {
                    name: "oft_R.cols",
                    ..index
                })
                .interned();
            let site = AdapterSite {
                module,
                rank: 0,
                layout,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // peft's Cayley-Neumann series (5 terms) keeps the skew-symmetric blocks, their
            // square and cube for the `bmm`s' backward (3 r b^2), and the `einsum` keeps the
            // orthogonal blocks where the input needs a gradient; under autocast each `bmm`
            // also keeps 16-bit casts of its operands (3 r b^2 more). Measured on llama.
            let square = ftbudget_tuners::mul(NAME, "oft blocks", r, b * b)?;
            ftbudget_tuners::WeightTerms {
                name: "oft rotation blocks",
                size: square,
                every: 3,
                grad: 1,
                autocast: 3,
            }
            .push(NAME, model, plan, module)?;
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    let r = reader.at_most("r", 0, MAX_BLOCK)?;
    let block_size = reader.at_most("block_size", 32, MAX_BLOCK)?;
    if r == 0 && block_size == 0 {
        return Err(refusal(
            NAME,
            "r",
            format!(
                "peft: Either `r` or `oft_block_size` must be non-zero. Currently, r = {r} and oft_block_size = {block_size}."
            ),
        ));
    }
    if r != 0 && block_size != 0 {
        return Err(refusal(
            NAME,
            "r",
            format!(
                "peft: You can only specify either r ({r}) or oft_block_size ({block_size}), but not both simultaneously, because r x oft_block_size == in_features."
            ),
        ));
    }
    Ok(Box::new(Oft {
        r,
        block_size,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "OFT: frozen base, block-diagonal orthogonal rotation of each Linear's input (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// peft moves a block size of 5 on 64 inputs to 4 (16 blocks), and 8 blocks of 11008
    /// inputs are 1376 wide.
    #[test]
    fn blocks_follow_pefts_adjustment() {
        assert_eq!(blocks(64, 0, 5), (16, 4));
        assert_eq!(blocks(64, 8, 0), (8, 8));
        assert_eq!(blocks(11008, 0, 32), (344, 32));
        assert_eq!(blocks(64, 0, 128), (1, 64));
        assert_eq!(adjust(96, 7), 6);
    }
}

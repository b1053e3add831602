//! BOFT (Liu et al. 2024) as peft's `BOFTConfig` builds it on Linears: the base is frozen and
//! every targeted Linear is rotated by a product of `m` butterfly factors, each block-diagonal
//! with `in / b` blocks of `b x b` (give `block_size` or `block_num`; `m` is
//! `n_butterfly_factor`). Trainable: `boft_R` (`m x (in / b) x b x b`) and the output scale
//! `boft_s` (`out`); peft also registers the `m` permutation matrices `boft_P` (`m x in x in`,
//! fp32, non-persistent) as a buffer of every adapted module, memory in no parameter count, and
//! quadratic in `in`. ftbudget follows the config as written, which is what peft does when its
//! `fbd_cuda` extension builds; without it (a CPU machine) peft silently uses one factor.
//! Activations: the module input (read by `x @ R`, kept as LoRA keeps it for A), the unscaled
//! output (`out` per token, for `boft_s`), the dense `in x in` rotations and the Cayley blocks
//! per module; the adapted Linear returns the input's dtype (fp32 under autocast).
//! peft refuses GPT-2's Conv1D.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite,
    DType, ModelShape, OptionDoc, OptionReader, PieceMatmul, PieceRole, Regime, RegimeError,
    RegimeRegistration, RegimeSpec, SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, refusal, refuse_conv1d, selected_modules};

pub const NAME: &str = "boft";

/// The largest block size, block count or butterfly factor accepted.
pub const MAX_OPTION: u64 = 1 << 16;

/// peft's first error line for a Conv1D target.
pub fn conv1d_refusal(out_features: u64, in_features: u64) -> String {
    format!(
        "Target module Conv1D(nf={out_features}, nx={in_features}) is not supported. Currently, only `torch.nn.Linear` and `torch.nn.Conv2d` (optionally quantized) are supported."
    )
}

/// `(block_size, block_num)` on a Linear of `in_features` with `factor = n_butterfly_factor -
/// 1`, or peft's `update_layer` refusal.
pub fn blocks(
    in_features: u64,
    block_size: u64,
    block_num: u64,
    factor: u64,
) -> Result<(u64, u64), String> {
    let shown = factor + 1;
    let (size, num) = if block_size == 0 {
        if !in_features.is_multiple_of(block_num) {
            return Err(format!(
                "in_features ({in_features}) must be divisible by boft_block_num ({block_num})!"
            ));
        }
        if factor != 0 {
            if factor > u64::from(block_num.ilog2()) {
                return Err(format!(
                    "Invalid combination of boft_n_butterfly_factor ({shown}) and boft_block_num ({block_num})!"
                ));
            }
            if !block_num.is_multiple_of(1 << factor) {
                return Err(format!(
                    "boft_block_num ({block_num}) must be a multiple of 2 raised to the power of boft_n_butterfly_factor ({shown})!"
                ));
            }
        }
        (in_features / block_num, block_num)
    } else {
        if !in_features.is_multiple_of(block_size) {
            return Err(format!(
                "in_features ({in_features}) must be divisible by boft_block_size ({block_size})!"
            ));
        }
        if factor != 0 {
            let span = block_size.checked_shl(factor as u32).unwrap_or(u64::MAX);
            if in_features < span || !in_features.is_multiple_of(span) {
                return Err(format!(
                    "Invalid combination of in_features ({in_features}), boft_n_butterfly_factor ({shown}) and boft_block_size ({block_size})!"
                ));
            }
        }
        (block_size, in_features / block_size)
    };
    if factor != 0 {
        if num % 2 != 0 {
            return Err(format!("boft_block_num ({num}) must be an even number!"));
        }
        if size % 2 != 0 {
            return Err(format!("boft_block_size ({size}) must be an even number!"));
        }
    }
    Ok((size, num))
}

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "block_size",
        values: "<int>",
        default: "4",
        help: "block size (peft's boft_block_size; give it or block_num, the other 0)",
    },
    OptionDoc {
        key: "block_num",
        values: "<int>",
        default: "0",
        help: "number of blocks (peft's boft_block_num)",
    },
    OptionDoc {
        key: "n_butterfly_factor",
        values: "<int>",
        default: "1",
        help: "butterfly factors (peft's boft_n_butterfly_factor)",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct Boft {
    block_size: u64,
    block_num: u64,
    n_butterfly_factor: u64,
    targets: Targets,
}

impl Regime for Boft {
    fn spec(&self) -> String {
        format!(
            "{NAME}:block_size={},block_num={},n_butterfly_factor={}{}",
            self.block_size,
            self.block_num,
            self.n_butterfly_factor,
            self.targets.spec_suffix()
        )
    }

    fn label(&self) -> String {
        format!(
            "BOFT b={} m={}",
            if self.block_size == 0 {
                format!("in/{}", self.block_num)
            } else {
                self.block_size.to_string()
            },
            self.n_butterfly_factor
        )
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::BOFT, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        refuse_conv1d(NAME, model, &modules, |m| {
            conv1d_refusal(m.out_features, m.in_features)
        })?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        let factors = self.n_butterfly_factor;
        for module in modules {
            let m = &model.modules[module];
            let (size, num) =
                blocks(m.in_features, self.block_size, self.block_num, factors - 1)
                    .map_err(|reason| refusal(NAME, "block_size", format!("peft: {reason}")))?;
            let mul = |what, a, b| ftbudget_tuners::mul(NAME, what, a, b);
            let r = mul("boft_R", mul("boft_R", factors, num)?, size * size)?;
            let p = mul(
                "boft_P",
                factors,
                mul("boft_P", m.in_features, m.in_features)?,
            )?;
            // The rotation `x @ R` reads the module input (kept as LoRA keeps it for A); the
            // scaled output keeps the unscaled one for `boft_s` (`out` per token).
            let layout = AdapterLayout::new("boft", SizeForm::OUT)
                .with_output(AdapterOutput::InputDtype)
                .with(AdapterPiece::trainable(
                    "boft_R",
                    SizeForm::constant(r),
                    PieceMatmul::No,
                ))
                .with(AdapterPiece::trainable(
                    "boft_s",
                    SizeForm::OUT,
                    PieceMatmul::No,
                ))
                .with(AdapterPiece {
                    name: "boft_P",
                    size: SizeForm::constant(p),
                    role: PieceRole::Buffer { dtype: DType::F32 },
                    matmul: PieceMatmul::No,
                })
                .interned();
            let site = AdapterSite {
                module,
                rank: 0,
                layout,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // Dense `in x in` rotations: the permuted block-diagonal product per factor, and the
            // rotation `x @ R` keeps where the input needs a gradient; under autocast the 16-bit
            // casts of the `bmm` operands (two per factor). Measured on llama.
            ftbudget_tuners::WeightTerms {
                name: "boft rotation",
                size: mul("boft rotation", m.in_features, m.in_features)?,
                every: factors,
                grad: 1,
                autocast: 2 * factors,
            }
            .push(NAME, model, plan, module)?;
            // The Cayley transform's `solve` keeps three fp32 tensors of the blocks (`r`) and
            // its int32 pivots (`in` per factor); the scale keeps two fp32 `out` vectors.
            let small = mul("boft cayley", r, 3)?
                .checked_add(mul("boft pivots", factors, m.in_features)?)
                .and_then(|n| n.checked_add(2 * m.out_features))
                .ok_or_else(|| refusal(NAME, "targets", "boft cayley: count overflows u64"))?;
            plan.push_activation_term(ActivationTerm {
                name: "boft cayley",
                module: Some(module),
                per_token: 0,
                fixed: mul("boft cayley", small, m.count)?,
                dtype: ActivationDtype::Dense(DType::F32),
                freed_in_forward: false,
            });
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    let block_size = reader.at_most("block_size", 4, MAX_OPTION)?;
    let block_num = reader.at_most("block_num", 0, MAX_OPTION)?;
    if block_size == 0 && block_num == 0 {
        return Err(refusal(
            NAME,
            "block_size",
            "peft: Either `boft_block_size` or `boft_block_num` must be non-zero. Currently, boft_block_size = 0 and boft_block_num = 0.",
        ));
    }
    if block_size != 0 && block_num != 0 {
        return Err(refusal(
            NAME,
            "block_size",
            format!(
                "peft: You can only specify either boft_block_size ({block_size}) or boft_block_num ({block_num}), but not both simultaneously, because boft_block_size x boft_block_num == in_features."
            ),
        ));
    }
    Ok(Box::new(Boft {
        block_size,
        block_num,
        n_butterfly_factor: reader.positive("n_butterfly_factor", 1, 32)?,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "BOFT: frozen base, butterfly-factorized orthogonal rotation per Linear (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

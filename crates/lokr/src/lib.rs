//! LoKr (LyCORIS) as peft's `LoKrConfig` builds it on Linears: the base is frozen and every
//! targeted Linear's update is a Kronecker product `w1 (x) w2`, with `out = l k` and `in = m n`
//! factored as peft's `factorization` does (`decompose_factor`). `w1` (`l x m`) is full unless
//! `decompose_both` and `r < max(l, m) / 2` (then `w1_a (l x r)`, `w1_b (r x m)`); `w2`
//! (`k x n`) is full unless `r < max(k, n) / 2`. Sizes are not linear in the dims, so each
//! module's are computed here. The Kronecker product is a full `out x in` update, an
//! activation term per adapted module. peft refuses GPT-2's Conv1D.

use ftbudget_core::{
    AdapterLayout, AdapterOutput, AdapterPiece, AdapterSite, ModelShape, OptionDoc, OptionReader,
    PieceMatmul, Regime, RegimeError, RegimeRegistration, RegimeSpec, SizeForm, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, refuse_conv1d, selected_modules};

pub const NAME: &str = "lokr";

/// The largest rank accepted.
pub const MAX_RANK: u64 = 1 << 20;

/// peft's first error line for a Conv1D target (LoKr shares LyCORIS' check with LoHa).
pub const CONV1D_REFUSAL: &str = "Target module of type <class 'transformers.pytorch_utils.Conv1D'> not supported, currently only adapters for Conv2d, Conv1d, Linear are supported";

/// peft's `factorization(dimension, factor)` (`peft/tuners/lokr/layer.py`): `(m, n)` with
/// `m <= n`, `m n = dimension`; with `factor > 0` dividing the dimension, `(factor, dim /
/// factor)` ordered; otherwise the most balanced pair whose smaller side is at most `factor`
/// (any, for `factor < 0`).
pub fn factorization(dimension: u64, factor: i64) -> (u64, u64) {
    if factor > 0 && dimension.is_multiple_of(factor as u64) {
        let (m, n) = (factor as u64, dimension / factor as u64);
        return if m > n { (n, m) } else { (m, n) };
    }
    let factor = if factor < 0 { dimension } else { factor as u64 };
    let (mut m, mut n) = (1u64, dimension);
    let length = m + n;
    while m < n {
        let mut new_m = m + 1;
        while !dimension.is_multiple_of(new_m) {
            new_m += 1;
        }
        let new_n = dimension / new_m;
        if new_m + new_n > length || new_m > factor {
            break;
        }
        (m, n) = (new_m, new_n);
    }
    if m > n { (n, m) } else { (m, n) }
}

/// The tensors peft creates on an `in -> out` Linear, in its order: `(name, elements)`.
pub fn lokr_tensors(
    in_features: u64,
    out_features: u64,
    rank: u64,
    decompose_both: bool,
    factor: i64,
) -> Vec<(&'static str, u64)> {
    let (in_m, in_n) = factorization(in_features, factor);
    let (out_l, out_k) = factorization(out_features, factor);
    // peft compares `r < max(..) / 2` in floating point: `2 r < max(..)` exactly.
    let use_w1 = !(decompose_both && 2 * rank < out_l.max(in_m));
    let use_w2 = 2 * rank >= out_k.max(in_n);
    let mut out = Vec::with_capacity(4);
    if use_w1 {
        out.push(("lokr_w1", out_l * in_m));
    } else {
        out.push(("lokr_w1_a", out_l * rank));
        out.push(("lokr_w1_b", rank * in_m));
    }
    if use_w2 {
        out.push(("lokr_w2", out_k * in_n));
    } else {
        out.push(("lokr_w2_a", out_k * rank));
        out.push(("lokr_w2_b", rank * in_n));
    }
    out
}

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "r",
        values: "<int>",
        default: "8",
        help: "rank of the low-rank factors (used when a factor is decomposed)",
    },
    OptionDoc {
        key: "alpha",
        values: "<int>",
        default: "8",
        help: "scaling numerator (no effect on counts or memory)",
    },
    OptionDoc {
        key: "decompose_both",
        values: "true|false",
        default: "false",
        help: "also decompose the left Kronecker factor w1 into a low-rank product",
    },
    OptionDoc {
        key: "decompose_factor",
        values: "<int>|-1",
        default: "-1",
        help: "Kronecker factor size (peft's decompose_factor; -1: most balanced)",
    },
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to adapt (peft's target_modules; LLaMA: q_proj+v_proj)",
    },
];

pub struct Lokr {
    rank: u64,
    alpha: u64,
    decompose_both: bool,
    decompose_factor: i64,
    targets: Targets,
}

impl Regime for Lokr {
    fn spec(&self) -> String {
        let mut s = format!("{NAME}:r={},alpha={}", self.rank, self.alpha);
        if self.decompose_both {
            s.push_str(",decompose_both=true");
        }
        if self.decompose_factor != -1 {
            s.push_str(&format!(",decompose_factor={}", self.decompose_factor));
        }
        s + &self.targets.spec_suffix()
    }

    fn label(&self) -> String {
        format!("LoKr r={}", self.rank)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::LOKR, model)?;
        let modules = selected_modules(NAME, model, &targets)?;
        refuse_conv1d(NAME, model, &modules, |_| CONV1D_REFUSAL.to_string())?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        for module in modules {
            let m = &model.modules[module];
            let tensors = lokr_tensors(
                m.in_features,
                m.out_features,
                self.rank,
                self.decompose_both,
                self.decompose_factor,
            );
            let layout = tensors
                .iter()
                .fold(
                    AdapterLayout::new("lokr", SizeForm::ZERO)
                        .with_output(AdapterOutput::InputDtype),
                    |l, &(name, n)| {
                        l.with(AdapterPiece::trainable(
                            name,
                            SizeForm::constant(n),
                            PieceMatmul::Inner,
                        ))
                    },
                )
                .interned();
            let site = AdapterSite {
                module,
                rank: 0,
                layout,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
            // The Kronecker update is built per forward and read by a `linear` on the module
            // input (kept as LoRA keeps it for A): the `linear` keeps the update (its 16-bit
            // cast under autocast) where the input needs a gradient.
            ftbudget_tuners::WeightTerms {
                name: "lokr kronecker update",
                size: m.weight_numel(),
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
    let decompose_factor: i64 = reader.parse("decompose_factor", -1, "-1 or a positive integer")?;
    if decompose_factor == 0 || !(-1..=1 << 20).contains(&decompose_factor) {
        return Err(reader.invalid(
            "decompose_factor",
            &decompose_factor.to_string(),
            "-1 or a positive integer",
        ));
    }
    Ok(Box::new(Lokr {
        rank: reader.positive("r", 8, MAX_RANK)?,
        alpha: reader.positive("alpha", 8, u64::from(u32::MAX))?,
        decompose_both: reader.flag("decompose_both", false)?,
        decompose_factor,
        targets: Targets::read(&reader, "targets")?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "LoKr: frozen base, Kronecker-product update per Linear (peft)",
        options: OPTIONS,
        rank_option: Some("r"),
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand from peft's loop: 4096 = 64 x 64; 11008 = 2^8 x 43 -> (86, 128); 32 = (4, 8).
    #[test]
    fn factorization_by_hand() {
        assert_eq!(factorization(4096, -1), (64, 64));
        assert_eq!(factorization(11008, -1), (86, 128));
        assert_eq!(factorization(32, -1), (4, 8));
        assert_eq!(factorization(64, 4), (4, 16));
        assert_eq!(factorization(96, 8), (8, 12));
        // A factor that does not divide: the most balanced pair with m <= factor.
        assert_eq!(factorization(96, 5), (4, 24));
    }
}

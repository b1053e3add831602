//! The roster: the one place that names every regime crate. A crate that is a dependency but never
//! named in code is not linked, and its `inventory::submit!` silently vanishes (dtolnay/inventory
//! issue 50); the `use ... as _` lines below keep each one. The CLI, xtask and benches depend on
//! this crate and call [`registry`]. Adding a regime = one dependency line + one `use` line here.

use ftbudget_core::{Registry, RegistryError};

use ftbudget_adalora as _;
use ftbudget_boft as _;
use ftbudget_dora as _;
use ftbudget_fourierft as _;
use ftbudget_full_ft as _;
use ftbudget_ia3 as _;
use ftbudget_ln_tuning as _;
use ftbudget_loha as _;
use ftbudget_lokr as _;
use ftbudget_lora as _;
use ftbudget_oft as _;
use ftbudget_p_tuning as _;
use ftbudget_prefix_tuning as _;
use ftbudget_prompt_tuning as _;
use ftbudget_qlora as _;
use ftbudget_trainable_tokens as _;
use ftbudget_vera as _;

/// The names this roster links, sorted. The roster test checks the registry against it.
pub const EXPECTED_REGIMES: &[&str] = &[
    "adalora",
    "boft",
    "dora",
    "fourierft",
    "full-ft",
    "ia3",
    "ln-tuning",
    "loha",
    "lokr",
    "lora",
    "oft",
    "p-tuning",
    "prefix-tuning",
    "prompt-tuning",
    "qlora",
    "trainable-tokens",
    "vera",
];

/// The registry of every linked regime.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::from_inventory()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftbudget_core::{RegimeRegistration, RegimeSpec};

    #[test]
    fn registered_names_are_exactly_the_roster() {
        assert_eq!(registry().unwrap().names(), EXPECTED_REGIMES);
    }

    fn no_build(
        _: &RegimeSpec,
    ) -> Result<Box<dyn ftbudget_core::Regime>, ftbudget_core::RegimeError> {
        unreachable!("never built")
    }

    static A: RegimeRegistration = RegimeRegistration {
        name: "twin",
        summary: "first",
        options: &[],
        rank_option: None,
        build: no_build,
    };
    static B: RegimeRegistration = RegimeRegistration {
        name: "twin",
        summary: "second",
        options: &[],
        rank_option: None,
        build: no_build,
    };

    #[test]
    fn a_duplicate_name_is_an_error() {
        let err = Registry::from_registrations([&A, &B]).err().unwrap();
        assert_eq!(err.to_string(), "regime `twin` is registered twice");
    }

    /// `Regime::plan_into` starts by clearing the plan it is given (callers reuse one plan
    /// across millions of points): planning twice, or over another regime's plan, must give the
    /// fresh plan.
    #[test]
    fn every_regime_clears_the_plan_it_writes() {
        use ftbudget_core::TransformerSpec;
        let model = TransformerSpec::minigpt().build().unwrap();
        let registry = registry().unwrap();
        // Each regime with its defaults, or the first of a few common options that plans on
        // the test model (peft's per-model-type defaults do not know it; trainable tokens
        // need ids).
        let regimes: Vec<_> = registry
            .names()
            .into_iter()
            .map(|name| {
                [
                    "",
                    ":targets=q_proj+v_proj",
                    ":targets=q_proj+v_proj,feedforward=",
                    ":tokens=0+1+2",
                ]
                .iter()
                .filter_map(|options| registry.build(&format!("{name}{options}")).ok())
                .find(|regime| regime.plan(&model).is_ok())
                .unwrap_or_else(|| panic!("{name}: no example spec plans"))
            })
            .collect();
        for regime in &regimes {
            let fresh = regime.plan(&model).unwrap();
            for other in &regimes {
                let mut reused = other.plan(&model).unwrap();
                regime.plan_into(&model, &mut reused).unwrap();
                assert_eq!(reused, fresh, "{} over {}", regime.spec(), other.spec());
            }
        }
    }

    #[test]
    fn unknown_regime_lists_the_registered_ones() {
        let err = registry().unwrap().build("lorra:r=8").err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "unknown regime `lorra` (registered: {})",
                EXPECTED_REGIMES.join(", ")
            )
        );
    }

    /// A declared rank option is one of the regime's documented options, with a default that
    /// is a rank.
    #[test]
    fn every_rank_option_is_a_documented_integer_option() {
        for registration in registry().unwrap().registrations() {
            if let Some(key) = registration.rank_option {
                let doc = registration.rank_doc();
                assert!(doc.is_some(), "{}: rank option `{key}`", registration.name);
                let default = doc.map(|d| d.default.parse::<u64>());
                assert!(
                    matches!(default, Some(Ok(r)) if r > 0),
                    "{}: default rank",
                    registration.name
                );
            }
        }
    }
}

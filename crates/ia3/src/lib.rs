//! IA3 (Liu et al. 2022) as peft's `IA3Config` builds it: the base is frozen and every targeted
//! Linear gains one trainable vector `ia3_l` that scales its output (`out` elements), or its
//! input on a feed-forward module (`in` elements). Without `targets=`, peft's default targets
//! and feed-forward modules for the model type are used (`k_proj, v_proj, down_proj` on LLaMA).
//! Activations: the unscaled output (compute dtype), or on a feed-forward module the input cast
//! to fp32, is kept for the scaling's backward; the frozen Linear keeps nothing.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, AdapterInput, AdapterLayout, AdapterPiece, AdapterSite, DType,
    ModelShape, OptionDoc, OptionReader, PieceMatmul, Regime, RegimeError, RegimeRegistration,
    RegimeSpec, SizeForm, TargetSpec, TrainingPlan, names_select,
};
use ftbudget_tuners::{FROZEN, Targets, defaults, refusal, selected_modules};

pub const NAME: &str = "ia3";

/// IA3 on a Linear whose output it scales (peft: `ia3_l` of shape `(out, 1)`); the unscaled
/// output is saved for the vector's gradient, `out` per token. The frozen Linear keeps
/// nothing of its input.
const IA3_OUTPUT: AdapterLayout = AdapterLayout::new("ia3", SizeForm::OUT)
    .with(AdapterPiece::trainable(
        "ia3_l",
        SizeForm::OUT,
        PieceMatmul::No,
    ))
    .with_input(AdapterInput::Declared);
/// IA3 on a feed-forward Linear, whose input it scales (peft: `(1, in)`); peft casts the input
/// to the vector's dtype (fp32) and the product keeps that copy: `in` fp32 per token, pushed as
/// a term by the regime.
const IA3_INPUT: AdapterLayout = AdapterLayout::new("ia3", SizeForm::ZERO)
    .with(AdapterPiece::trainable(
        "ia3_l",
        SizeForm::IN,
        PieceMatmul::No,
    ))
    .with_input(AdapterInput::Declared);

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "targets",
        values: "all-linear|attn|mlp|name+name...",
        default: "peft's per model type",
        help: "modules to scale (peft's target_modules; LLaMA: k_proj+v_proj+down_proj)",
    },
    OptionDoc {
        key: "feedforward",
        values: "name+name...",
        default: "peft's per model type",
        help: "targets whose input is scaled instead of their output (peft's feedforward_modules)",
    },
];

pub struct Ia3 {
    targets: Targets,
    feedforward: Option<Vec<String>>,
}

impl Ia3 {
    fn feedforward(&self, model: &ModelShape) -> Result<Vec<String>, RegimeError> {
        match &self.feedforward {
            Some(names) => Ok(names.clone()),
            None => ftbudget_tuners::default_names(NAME, defaults::IA3_FEEDFORWARD, model)
                .map(|names| names.iter().map(|n| n.to_string()).collect()),
        }
    }
}

impl Regime for Ia3 {
    fn spec(&self) -> String {
        let mut spec = NAME.to_string();
        let mut options = Vec::new();
        if let Some(t) = &self.targets.0 {
            options.push(format!("targets={t}"));
        }
        if let Some(ff) = &self.feedforward {
            options.push(format!("feedforward={}", ff.join("+")));
        }
        if !options.is_empty() {
            spec.push(':');
            spec.push_str(&options.join(","));
        }
        spec
    }

    fn label(&self) -> String {
        match &self.targets.0 {
            Some(t) => format!("IA3 ({t})"),
            None => "IA3".into(),
        }
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let targets = self.targets.resolve(NAME, defaults::IA3, model)?;
        let feedforward = self.feedforward(model)?;
        // peft's IA3Config: "`feedforward_modules` should be a subset of `target_modules`"
        // (checked when both are lists).
        if let (Some(TargetSpec::Names(names)), Some(ff)) = (&self.targets.0, &self.feedforward)
            && let Some(stray) = ff.iter().find(|f| !names.contains(f))
        {
            return Err(refusal(
                NAME,
                "feedforward",
                format!(
                    "`{stray}` is not a target (peft: `feedforward_modules` should be a subset of `target_modules`)"
                ),
            ));
        }
        let modules = selected_modules(NAME, model, &targets)?;
        ftbudget_tuners::refuse_parameter_hosts(NAME, model, &modules)?;
        plan.set_base(model, FROZEN);
        for module in modules {
            let m = &model.modules[module];
            let layout = if names_select(&feedforward, m) {
                plan.push_activation_term(ActivationTerm {
                    name: "ia3 fp32 input",
                    module: Some(module),
                    per_token: ftbudget_tuners::mul(NAME, "ia3 input", m.in_features, m.count)?,
                    fixed: 0,
                    dtype: ActivationDtype::Dense(DType::F32),
                    freed_in_forward: false,
                });
                &IA3_INPUT
            } else {
                &IA3_OUTPUT
            };
            // IA3 has no rank: its sizes do not depend on it.
            let site = AdapterSite {
                module,
                rank: 0,
                layout,
            };
            ftbudget_tuners::push(NAME, model, plan, site)?;
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    Ok(Box::new(Ia3 {
        targets: Targets::read(&reader, "targets")?,
        feedforward: ftbudget_tuners::name_list(&reader, "feedforward"),
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "IA3: frozen base, a trainable scaling vector per targeted Linear (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

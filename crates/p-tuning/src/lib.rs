//! P-tuning (Liu et al. 2021) as peft's `PromptEncoderConfig` builds it: the base is frozen;
//! `virtual_tokens` embeddings of `hidden` pass through a trainable prompt encoder and are
//! prepended to every sequence (activations of `seq + virtual_tokens` tokens). The encoder is
//! peft's MLP (`hidden -> e -> e -> hidden`, with biases; `e` is `encoder_hidden`) or, with
//! `encoder_type=lstm`, a two-layer bidirectional LSTM of width `e` followed by an MLP `2e ->
//! 2e -> hidden`.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, DType, ModelShape, OptionDoc, OptionReader, Regime,
    RegimeError, RegimeRegistration, RegimeSpec, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, mul};

pub const NAME: &str = "p-tuning";

/// The most virtual tokens, or encoder width, accepted.
pub const MAX_TOKENS: u64 = 1 << 20;

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "virtual_tokens",
        values: "<int>",
        default: "20",
        help: "virtual tokens prepended to the input (peft's num_virtual_tokens)",
    },
    OptionDoc {
        key: "encoder_hidden",
        values: "<int>",
        default: "hidden",
        help: "width of the prompt encoder (peft's encoder_hidden_size)",
    },
    OptionDoc {
        key: "encoder_type",
        values: "mlp|lstm",
        default: "mlp",
        help: "the prompt encoder (peft's encoder_reparameterization_type)",
    },
];

pub struct PTuning {
    virtual_tokens: u64,
    encoder_hidden: Option<u64>,
    lstm: bool,
}

/// The prompt encoder's tensors after the embedding, in peft's order: `(name, elements)`.
fn encoder_tensors(h: u64, e: u64, lstm: bool) -> Option<Vec<(&'static str, u64)>> {
    let m = |a: u64, b: u64| a.checked_mul(b);
    if !lstm {
        return Some(vec![
            ("prompt_encoder.mlp_head.0.weight", m(e, h)?),
            ("prompt_encoder.mlp_head.0.bias", e),
            ("prompt_encoder.mlp_head.2.weight", m(e, e)?),
            ("prompt_encoder.mlp_head.2.bias", e),
            ("prompt_encoder.mlp_head.4.weight", m(h, e)?),
            ("prompt_encoder.mlp_head.4.bias", h),
        ]);
    }
    let gates = m(4, e)?;
    // Two layers, two directions: input `h`, then `2e`; recurrent `e`; two biases each.
    let mut out = Vec::new();
    for (input, layer_names) in [
        (h, ["lstm_head (layer 0)", "lstm_head (layer 0, reverse)"]),
        (
            m(2, e)?,
            ["lstm_head (layer 1)", "lstm_head (layer 1, reverse)"],
        ),
    ] {
        for name in layer_names {
            out.push((name, m(gates, input.checked_add(e)?.checked_add(2)?)?));
        }
    }
    out.push(("prompt_encoder.mlp_head.0.weight", m(m(2, e)?, m(2, e)?)?));
    out.push(("prompt_encoder.mlp_head.0.bias", m(2, e)?));
    out.push(("prompt_encoder.mlp_head.2.weight", m(h, m(2, e)?)?));
    out.push(("prompt_encoder.mlp_head.2.bias", h));
    Some(out)
}

impl Regime for PTuning {
    fn spec(&self) -> String {
        let mut s = format!("{NAME}:virtual_tokens={}", self.virtual_tokens);
        if let Some(e) = self.encoder_hidden {
            s.push_str(&format!(",encoder_hidden={e}"));
        }
        if self.lstm {
            s.push_str(",encoder_type=lstm");
        }
        s
    }

    fn label(&self) -> String {
        format!("p-tuning {} tokens", self.virtual_tokens)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        plan.set_base(model, FROZEN);
        let h = model.dims.hidden;
        let e = self.encoder_hidden.unwrap_or(h);
        let embedding = mul(
            NAME,
            "prompt_encoder.embedding.weight",
            self.virtual_tokens,
            h,
        )?;
        plan.push_extra_params(model, "prompt_encoder.embedding.weight", embedding, 1, true);
        let tensors = encoder_tensors(h, e, self.lstm).ok_or_else(|| RegimeError::Count {
            regime: NAME.into(),
            cause: ftbudget_core::CountError {
                what: "prompt encoder",
            },
        })?;
        for (name, n) in tensors {
            plan.push_extra_params(model, name, n, 1, true);
        }
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
    let encoder_hidden = match reader.raw("encoder_hidden") {
        None => None,
        Some(_) => Some(reader.positive("encoder_hidden", 1, MAX_TOKENS)?),
    };
    let lstm = match reader.raw("encoder_type").unwrap_or("mlp") {
        "mlp" | "MLP" => false,
        "lstm" | "LSTM" => true,
        other => return Err(reader.invalid("encoder_type", other, "mlp or lstm")),
    };
    Ok(Box::new(PTuning {
        virtual_tokens: reader.positive("virtual_tokens", 20, MAX_TOKENS)?,
        encoder_hidden,
        lstm,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "p-tuning: frozen base, virtual tokens from a trainable prompt encoder (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

//! Prefix tuning (Li and Liang 2021) as peft's `PrefixTuningConfig` builds it: the base is
//! frozen; every layer's attention sees `virtual_tokens` extra keys and values. Their source
//! trains: an embedding of `virtual_tokens x (layers x 2 x token_dim)`, or with `projection=`
//! (peft's `prefix_projection=True` with `encoder_hidden_size`) an embedding of `virtual_tokens x
//! token_dim` and a two-layer MLP `token_dim -> projection -> layers x 2 x token_dim` with
//! biases. `token_dim` is `kv_heads x head_dim` (peft's grouped-query rule), `hidden` without
//! grouped heads. Activations: the prefix key/value caches (`layers x 2 x virtual_tokens x
//! token_dim`) and the encoder's output, counted for one sequence (peft expands them per batch
//! element: a batch of `b` holds `b` times this term).

use ftbudget_core::{
    ActivationDtype, ActivationTerm, ModelShape, OptionDoc, OptionReader, Regime, RegimeError,
    RegimeRegistration, RegimeSpec, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, mul};

pub const NAME: &str = "prefix-tuning";

/// The most virtual tokens, or projection width, accepted.
pub const MAX_TOKENS: u64 = 1 << 20;

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "virtual_tokens",
        values: "<int>",
        default: "30",
        help: "prefix length (peft's num_virtual_tokens)",
    },
    OptionDoc {
        key: "projection",
        values: "<int>|0",
        default: "0",
        help: "hidden width of the reparameterizing MLP (peft's prefix_projection with encoder_hidden_size); 0: none",
    },
];

pub struct PrefixTuning {
    virtual_tokens: u64,
    projection: u64,
}

impl Regime for PrefixTuning {
    fn spec(&self) -> String {
        let mut s = format!("{NAME}:virtual_tokens={}", self.virtual_tokens);
        if self.projection != 0 {
            s.push_str(&format!(",projection={}", self.projection));
        }
        s
    }

    fn label(&self) -> String {
        format!("prefix tuning {} tokens", self.virtual_tokens)
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        plan.set_base(model, FROZEN);
        let d = &model.dims;
        let vt = self.virtual_tokens;
        let token_dim = mul(NAME, "token_dim", d.kv_heads, d.head_dim)?;
        let width = mul(NAME, "prefix width", d.layers * 2, token_dim)?;
        if self.projection == 0 {
            let n = mul(NAME, "prompt_encoder.embedding.weight", vt, width)?;
            plan.push_extra_params(model, "prompt_encoder.embedding.weight", n, 1, true);
        } else {
            let p = self.projection;
            let push = |plan: &mut TrainingPlan, name, n| {
                plan.push_extra_params(model, name, n, 1, true);
            };
            push(
                plan,
                "prompt_encoder.embedding.weight",
                mul(NAME, "embedding", vt, token_dim)?,
            );
            push(
                plan,
                "prompt_encoder.transform.0.weight",
                mul(NAME, "transform.0", p, token_dim)?,
            );
            push(plan, "prompt_encoder.transform.0.bias", p);
            push(
                plan,
                "prompt_encoder.transform.2.weight",
                mul(NAME, "transform.2", width, p)?,
            );
            push(plan, "prompt_encoder.transform.2.bias", width);
        }
        // The prefix's gradient flows through every layer's attention: its queries and output
        // are kept per token (`2 x heads x head_dim` per layer), which a frozen model spares.
        let attention = mul(NAME, "prefix attention", d.heads * d.head_dim, 2 * d.layers)?;
        plan.push_activation_term(ActivationTerm {
            name: "attention queries and outputs",
            module: None,
            per_token: attention,
            fixed: 0,
            dtype: ActivationDtype::Compute,
            freed_in_forward: false,
        });
        let cache = mul(NAME, "prefix cache", vt, width)?;
        plan.push_activation_term(ActivationTerm {
            name: "prefix key/value cache",
            module: None,
            per_token: 0,
            fixed: mul(NAME, "prefix cache", cache, 2)?,
            dtype: ActivationDtype::Compute,
            freed_in_forward: false,
        });
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    let expected = format!("an integer from 0 to {MAX_TOKENS}");
    let projection: u64 = reader.parse("projection", 0, &expected)?;
    if projection > MAX_TOKENS {
        return Err(reader.invalid("projection", &projection.to_string(), &expected));
    }
    Ok(Box::new(PrefixTuning {
        virtual_tokens: reader.positive("virtual_tokens", 30, MAX_TOKENS)?,
        projection,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "prefix tuning: frozen base, trainable key/value prefixes for every layer (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

//! Trainable tokens as peft's `TrainableTokensConfig` builds it: the base is frozen and only the
//! listed rows (`tokens=`, peft's `token_indices`) of the targeted embedding train, as a delta
//! `trainable_tokens_delta (n x hidden)`; peft keeps the original rows as a buffer
//! (`trainable_tokens_original`, `n x hidden`), memory in no parameter count. A tied output
//! layer shares the same delta. Activations: the embedding output now needs a gradient, so the
//! first norm keeps its input (`hidden` per token, fp32); a tied output layer keeps its input
//! and the merged weight.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, DType, ModelShape, OptionDoc, OptionReader, ParamKind,
    ParamOrigin, ParamSource, PlannedParams, Regime, RegimeError, RegimeRegistration, RegimeSpec,
    Storage, TrainingPlan,
};
use ftbudget_tuners::{FROZEN, mul, path_matches, refusal};

pub const NAME: &str = "trainable-tokens";

const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "targets",
        values: "name",
        default: "embed_tokens",
        help: "the embedding whose rows train (peft's target_modules)",
    },
    OptionDoc {
        key: "tokens",
        values: "id+id...",
        default: "(required)",
        help: "token ids whose embeddings train (peft's token_indices)",
    },
];

pub struct TrainableTokens {
    targets: String,
    tokens: Vec<u64>,
}

impl Regime for TrainableTokens {
    fn spec(&self) -> String {
        let ids: Vec<String> = self.tokens.iter().map(u64::to_string).collect();
        format!("{NAME}:targets={},tokens={}", self.targets, ids.join("+"))
    }

    fn label(&self) -> String {
        format!("trainable tokens ({})", self.tokens.len())
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let embedding = model.params.iter().find(|p| {
            p.kind == ParamKind::Embedding
                && path_matches(
                    p.name.rsplit_once('.').map_or(p.name.as_str(), |(m, _)| m),
                    &self.targets,
                )
        });
        let Some(embedding) = embedding else {
            return Err(refusal(
                NAME,
                "targets",
                format!(
                    "no embedding named `{}` (peft: Target modules {{'{}'}} not found in the base model)",
                    self.targets, self.targets
                ),
            ));
        };
        let hidden = model.dims.hidden;
        let vocab = embedding.numel / hidden.max(1);
        if let Some(id) = self.tokens.iter().find(|&&id| id >= vocab) {
            return Err(refusal(
                NAME,
                "tokens",
                format!("token id {id} is past the embedding's {vocab} rows"),
            ));
        }
        plan.set_base(model, FROZEN);
        let n = mul(
            NAME,
            "trainable_tokens_delta",
            self.tokens.len() as u64,
            hidden,
        )?;
        plan.push_extra_params(model, "trainable_tokens_delta", n, 1, true);
        plan.push_group(
            model,
            PlannedParams {
                source: ParamSource::Extra {
                    name: "trainable_tokens_original",
                },
                numel: n,
                count: 1,
                trainable: false,
                origin: ParamOrigin::Buffer,
                storage: Storage::Policy,
                matmul_weight: false,
            },
        );
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
        if model.tied_embeddings {
            // peft wraps the tied output layer too: `linear(x, W)` with the merged weight,
            // which needs a gradient, keeps the final norm's output (`hidden` per token) and
            // the merged `vocab x hidden` weight (its 16-bit cast under autocast).
            plan.push_activation_term(ActivationTerm {
                name: "tied output layer input",
                module: None,
                per_token: hidden,
                fixed: 0,
                dtype: ActivationDtype::Compute,
                freed_in_forward: false,
            });
            plan.push_activation_term(ActivationTerm {
                name: "tied output layer merged weight",
                module: None,
                per_token: 0,
                fixed: embedding.numel,
                dtype: ActivationDtype::Compute,
                freed_in_forward: false,
            });
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, OPTIONS)?;
    let raw = reader
        .raw("tokens")
        .ok_or_else(|| reader.invalid("tokens", "", "a list of token ids such as 0+1+2"))?;
    let mut tokens = Vec::new();
    for id in raw.split('+') {
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| reader.invalid("tokens", raw, "token ids such as 0+1+2"))?;
        // peft keeps each index once.
        if !tokens.contains(&id) {
            tokens.push(id);
        }
    }
    Ok(Box::new(TrainableTokens {
        targets: reader.raw("targets").unwrap_or("embed_tokens").to_string(),
        tokens,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "trainable tokens: frozen base, trainable rows of the embedding (peft)",
        options: OPTIONS,
        rank_option: None,
        build,
    }
}

//! Full fine-tuning: every base parameter is trainable and stored as the precision policy says
//! (under the seed's mixed precision that is fp16 weights, an fp32 master copy, fp16 gradients
//! and fp32 Adam moments: 16 bytes per parameter, the ZeRO paper's figure).

use ftbudget_core::{
    ModelShape, OptionReader, ParamKind, ParamOrigin, ParamSource, PlannedParams, Regime,
    RegimeError, RegimeRegistration, RegimeSpec, Storage, TrainingPlan,
};

pub const NAME: &str = "full-ft";

pub struct FullFineTuning;

impl Regime for FullFineTuning {
    fn spec(&self) -> String {
        NAME.to_string()
    }

    fn label(&self) -> String {
        "Full FT".to_string()
    }

    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError> {
        out.clear();
        out.groups
            .extend(model.params.iter().enumerate().map(|(i, p)| PlannedParams {
                source: ParamSource::Base { param: i },
                numel: p.numel,
                count: p.count,
                trainable: true,
                origin: ParamOrigin::Base,
                storage: Storage::Policy,
                matmul_weight: is_matmul_weight(model, p.kind),
            }));
        Ok(())
    }
}

/// Weights that a matmul consumes (Linear weights, and the embedding when the lm_head is tied).
pub fn is_matmul_weight(model: &ModelShape, kind: ParamKind) -> bool {
    match kind {
        ParamKind::LinearWeight(_) => true,
        ParamKind::Embedding => model.tied_embeddings,
        _ => false,
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    OptionReader::new(spec, &[])?;
    Ok(Box::new(FullFineTuning))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "full fine-tuning: every parameter trainable",
        options: &[],
        build,
    }
}

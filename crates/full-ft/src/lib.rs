//! Full fine-tuning: every base parameter is trainable and stored as the precision policy says
//! (under the seed's mixed precision that is fp16 weights, an fp32 master copy, fp16 gradients
//! and fp32 Adam moments: 16 bytes per parameter, the ZeRO paper's figure).

use ftbudget_core::{
    BaseTraining, BaseTreatment, ModelShape, OptionReader, Regime, RegimeError, RegimeRegistration,
    RegimeSpec, Storage, TrainingPlan,
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
        out.set_base(
            model,
            BaseTreatment {
                training: BaseTraining::All,
                block_linear_storage: Storage::Policy,
                other_storage: Storage::Policy,
            },
        );
        Ok(())
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
        rank_option: None,
        build,
    }
}

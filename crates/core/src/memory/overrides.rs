//! The settings a user gives one by one (the CLI's flags, the API's parameters, a recipe's
//! keys), laid over a base ([`MemorySettings::pytorch`], [`MemorySettings::seed`] or a recipe's
//! settings) by one rule, so that every front end resolves them the same way.

use super::{ActivationModel, AttentionImpl, Checkpointing, LossKind, MemorySettings};
use super::{Optimizer, Precision};
use crate::dtype::DType;

/// Each setting given, or `None` to keep the base's. The switches (`optimizer_in_backward`,
/// `activation_offload`) are `Some(true)` to turn on, `Some(false)` to turn off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SettingsOverrides {
    pub precision: Option<Precision>,
    pub base_dtype: Option<DType>,
    pub optimizer: Option<Optimizer>,
    pub step_counters: Option<bool>,
    pub activations: Option<ActivationModel>,
    pub attention: Option<AttentionImpl>,
    pub checkpointing: Option<Checkpointing>,
    pub dropout: Option<f64>,
    pub batch: Option<u64>,
    pub seq: Option<u64>,
    pub gpus: Option<u64>,
    pub zero: Option<u8>,
    pub grad_accum: Option<u64>,
    pub loss: Option<LossKind>,
    pub optimizer_in_backward: Option<bool>,
    pub activation_offload: Option<bool>,
}

impl SettingsOverrides {
    /// `base` with every given setting replacing its value (not validated: call
    /// [`MemorySettings::validate`] on the result).
    pub fn apply(&self, mut s: MemorySettings) -> MemorySettings {
        fn set<T: Copy>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        set(&mut s.precision, self.precision);
        if self.base_dtype.is_some() {
            s.base_dtype = self.base_dtype;
        }
        set(&mut s.optimizer, self.optimizer);
        set(&mut s.step_counters, self.step_counters);
        set(&mut s.activations.model, self.activations);
        set(&mut s.activations.attention, self.attention);
        set(&mut s.activations.checkpointing, self.checkpointing);
        if self.dropout.is_some() {
            s.activations.dropout = self.dropout;
        }
        set(&mut s.workload.batch, self.batch);
        set(&mut s.workload.seq, self.seq);
        set(&mut s.sharding.gpus, self.gpus);
        set(&mut s.sharding.zero_stage, self.zero);
        set(&mut s.step.grad_accum, self.grad_accum);
        set(&mut s.step.loss, self.loss);
        set(
            &mut s.step.optimizer_in_backward,
            self.optimizer_in_backward,
        );
        set(&mut s.step.activation_offload, self.activation_offload);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_keeps_the_base() {
        for base in [MemorySettings::pytorch(), MemorySettings::seed()] {
            assert_eq!(SettingsOverrides::default().apply(base.clone()), base);
        }
    }

    #[test]
    fn each_given_setting_replaces_the_base_value() {
        let o = SettingsOverrides {
            precision: Some(Precision::Fp32),
            base_dtype: Some(DType::F16),
            batch: Some(3),
            seq: Some(128),
            gpus: Some(4),
            zero: Some(3),
            grad_accum: Some(8),
            loss: Some(LossKind::Chunked),
            optimizer_in_backward: Some(true),
            activation_offload: Some(true),
            dropout: Some(0.1),
            ..SettingsOverrides::default()
        };
        let s = o.apply(MemorySettings::pytorch());
        assert_eq!(s.precision, Precision::Fp32);
        assert_eq!(s.base_dtype, Some(DType::F16));
        assert_eq!((s.workload.batch, s.workload.seq), (3, 128));
        assert_eq!((s.sharding.gpus, s.sharding.zero_stage), (4, 3));
        assert_eq!((s.step.grad_accum, s.step.loss), (8, LossKind::Chunked));
        assert!(s.step.optimizer_in_backward && s.step.activation_offload);
        assert_eq!(s.activations.dropout, Some(0.1));
        // What was not given is the base's.
        assert_eq!(s.optimizer, MemorySettings::pytorch().optimizer);
        assert_eq!(
            s.activations.attention,
            MemorySettings::pytorch().activations.attention
        );
    }
}

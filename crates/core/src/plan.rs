//! A training plan: what a regime decides. Which parameter tensors exist (base, adapters, saved
//! copies), which are trainable, how each group is stored, and any activation memory the regime
//! adds. The memory model turns a plan into bytes; the counts below give peft's figures.

use crate::dtype::DType;
use crate::error::CountError;
use crate::shape::ModelShape;
use serde::Serialize;

/// Where a parameter group comes from; peft's `all params` counts every origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamOrigin {
    /// A parameter of the base model (trainable under full fine-tuning or `bias=`).
    Base,
    /// A parameter the regime adds (LoRA A/B, lora_B bias, DoRA magnitude).
    Adapter,
    /// A trainable copy of a base module (`modules_to_save`).
    SavedCopy,
}

/// bitsandbytes' 4-bit NF4 storage of one weight tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Nf4Layout {
    /// Elements per absmax block (bitsandbytes' default 64).
    pub blocksize: u64,
    /// QLoRA's double quantization: absmax stored as uint8 with fp32 nested absmax per
    /// `nested_blocksize` blocks and one fp32 offset.
    pub double_quant: bool,
    pub nested_blocksize: u64,
    /// Count the per-tensor codebooks bitsandbytes keeps in each quant state (16 fp32, plus 256
    /// fp32 with double quant). The seed's rule leaves them out.
    pub codebooks: bool,
    /// Absmax element size without double quantization (bitsandbytes: fp32). The seed lab's text
    /// says fp16 but its arithmetic (4/64 B per weight) is fp32.
    pub absmax_dtype: DType,
}

impl Nf4Layout {
    pub const fn bitsandbytes(double_quant: bool) -> Self {
        Nf4Layout {
            blocksize: 64,
            double_quant,
            nested_blocksize: 256,
            codebooks: true,
            absmax_dtype: DType::F32,
        }
    }

    /// Exact bytes of one quantized tensor of `numel` elements.
    pub fn tensor_bytes(&self, numel: u64) -> u64 {
        let packed = numel.div_ceil(2);
        let blocks = numel.div_ceil(self.blocksize.max(1));
        let stats = if self.double_quant {
            let nested = blocks.div_ceil(self.nested_blocksize.max(1));
            blocks + 4 * nested + 4
        } else {
            blocks * self.absmax_dtype.bytes()
        };
        let codebooks = match (self.codebooks, self.double_quant) {
            (false, _) => 0,
            (true, false) => 16 * 4,
            (true, true) => 16 * 4 + 256 * 4,
        };
        packed + stats + codebooks
    }
}

/// How a parameter group is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Storage {
    /// As the precision policy says for trainable or frozen parameters.
    Policy,
    /// A fixed dense dtype whatever the policy.
    Dense { dtype: DType },
    /// 4-bit NormalFloat (frozen only).
    Nf4(Nf4Layout),
}

/// Which tensor a planned group is, by index into the model (no strings: plans are built in the
/// hot path of sweeps). [`ParamSource::describe`] gives the peft-style name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ParamSource {
    /// `model.params[param]`.
    Base {
        param: usize,
    },
    LoraA {
        module: usize,
    },
    LoraB {
        module: usize,
    },
    LoraBBias {
        module: usize,
    },
    DoraMagnitude {
        module: usize,
    },
    /// The `modules_to_save` copy of a module's weight.
    SavedWeight {
        module: usize,
    },
    SavedBias {
        module: usize,
    },
}

impl ParamSource {
    /// The parameter name with layer indices as `*`, as peft would show it.
    pub fn describe(&self, model: &ModelShape) -> String {
        let module = |m: usize| model.modules[m].path.as_str();
        match *self {
            ParamSource::Base { param } => model.params[param].name.clone(),
            ParamSource::LoraA { module: m } => format!("{}.lora_A.weight", module(m)),
            ParamSource::LoraB { module: m } => format!("{}.lora_B.weight", module(m)),
            ParamSource::LoraBBias { module: m } => format!("{}.lora_B.bias", module(m)),
            ParamSource::DoraMagnitude { module: m } => {
                format!("{}.lora_magnitude_vector", module(m))
            }
            ParamSource::SavedWeight { module: m } => {
                format!("{}.modules_to_save.weight", module(m))
            }
            ParamSource::SavedBias { module: m } => format!("{}.modules_to_save.bias", module(m)),
        }
    }
}

/// `count` tensors of `numel` elements, all alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedParams {
    pub source: ParamSource,
    pub numel: u64,
    pub count: u64,
    pub trainable: bool,
    pub origin: ParamOrigin,
    pub storage: Storage,
    /// A Linear weight whose matmul runs in the compute dtype (autocast saves a 16-bit copy).
    pub matmul_weight: bool,
}

impl PlannedParams {
    pub fn total(&self) -> u64 {
        self.numel * self.count
    }
}

/// A Linear module with an adapter, for the activation model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdapterSite {
    pub module: usize,
    pub in_features: u64,
    pub out_features: u64,
    pub count: u64,
    pub rank: u64,
    pub dora: bool,
}

/// The dtype an activation term is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationDtype {
    /// The compute dtype of the precision policy (16-bit under autocast).
    Compute,
    Dense(DType),
}

/// What an activation term a regime adds is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ActivationTermKind {
    /// LoRA's `x A` saved for B's backward, for `model.modules[module]`.
    LoraIntermediate { module: usize },
    /// DoRA's weight-sized temporaries.
    DoraWeightNorm { module: usize },
    /// QLoRA's dequantized weight.
    Dequantized { module: usize },
    /// Anything else, named.
    Other { name: &'static str },
}

/// Activation memory a regime adds: `per_token * batch * seq + fixed` elements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationTerm {
    pub kind: ActivationTermKind,
    pub per_token: u64,
    pub fixed: u64,
    pub dtype: ActivationDtype,
}

/// What a regime decides for one model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrainingPlan {
    pub groups: Vec<PlannedParams>,
    pub adapters: Vec<AdapterSite>,
    pub activation_terms: Vec<ActivationTerm>,
}

fn sum(what: &'static str, mut it: impl Iterator<Item = u64>) -> Result<u64, CountError> {
    it.try_fold(0u64, |acc, x| acc.checked_add(x))
        .ok_or(CountError { what })
}

impl TrainingPlan {
    /// Empty the plan, keeping its allocations (for sweeps that plan millions of times).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.adapters.clear();
        self.activation_terms.clear();
    }

    /// Parameters updated by the optimizer.
    pub fn trainable_params(&self) -> Result<u64, CountError> {
        sum(
            "trainable_params",
            self.groups
                .iter()
                .filter(|g| g.trainable)
                .map(PlannedParams::total),
        )
    }

    /// Parameters held but not updated.
    pub fn frozen_params(&self) -> Result<u64, CountError> {
        sum(
            "frozen_params",
            self.groups
                .iter()
                .filter(|g| !g.trainable)
                .map(PlannedParams::total),
        )
    }

    /// peft's `all params`: base model + adapters + `modules_to_save` copies, every tensor at its
    /// logical (unpacked) size.
    pub fn all_params(&self) -> Result<u64, CountError> {
        sum("all_params", self.groups.iter().map(PlannedParams::total))
    }

    /// The base model's own parameters.
    pub fn base_params(&self) -> Result<u64, CountError> {
        sum(
            "base_params",
            self.groups
                .iter()
                .filter(|g| g.origin == ParamOrigin::Base)
                .map(PlannedParams::total),
        )
    }

    /// Parameters added by the regime (adapters and saved copies).
    pub fn added_params(&self) -> Result<u64, CountError> {
        sum(
            "added_params",
            self.groups
                .iter()
                .filter(|g| g.origin != ParamOrigin::Base)
                .map(PlannedParams::total),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_bytes_match_bitsandbytes_for_64x64() {
        // shared/fixtures/nf4_bytes.json: 64x64, blocksize 64.
        assert_eq!(Nf4Layout::bitsandbytes(false).tensor_bytes(4096), 2368);
        assert_eq!(Nf4Layout::bitsandbytes(true).tensor_bytes(4096), 3208);
    }
}

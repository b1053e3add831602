//! QLoRA (Dettmers et al. 2023): LoRA adapters over a frozen base whose Linear weights inside the
//! transformer blocks are stored in 4-bit NormalFloat exactly as bitsandbytes lays them out
//! (packed `ceil(n/2)` bytes, an absmax per block, nested absmax and offset under double
//! quantization, per-tensor codebooks). bitsandbytes swaps `nn.Linear` modules only: the fused
//! 3-D expert weights and routers of transformers 5's MoE models are parameters of other modules
//! and stay dense, as loaded, and like every other 16-bit parameter are upcast to fp32 by the
//! preparation (measured on qwen3_moe, `fixtures/memory/measured_peak_qlora.json`).
//!
//! Embeddings, norms, the lm_head and biases are held as QLoRA recipes (TRL's `SFTTrainer`,
//! axolotl, peft's examples, HF `qlora.py`) hold them: `prepare=true` (the default) is peft's
//! `prepare_model_for_kbit_training`, which upcasts every 16-bit parameter that is not 4-bit to
//! fp32 whatever dtype the model was loaded in (`--base-dtype`), so under autocast the embedding
//! hands an fp32 residual stream to the blocks, the norms hand fp32 to the Linears and autocast
//! casts the fp32 lm_head weight for its matmul. `prepare=false` keeps them as loaded (the
//! frozen base's dtype). Gradient checkpointing, which the function turns on by default, stays
//! the `--checkpointing` setting: recipes pass it from the user's flag.
//!
//! The 4-bit Linears compute in `bnb_4bit_compute_dtype` (`compute_dtype=`, bf16 as QLoRA
//! recipes set it): their biases are cast to it in the first forward, each weight is
//! dequantized to it for its matmul, and the Linear returns its input's dtype
//! (`Linear4bit.forward`: `matmul_4bit(x.to(compute_dtype), ...).to(inp_dtype)`), fp32 under
//! autocast, where the block's norms hand fp32 to the Linears. bitsandbytes' `MatMul4Bit` saves
//! nothing for the backward but the packed weight (a parameter), and the backward dequantizes
//! the weight again to compute the input's gradient.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, DType, ModelShape, Nf4Layout, OptionDoc, OptionReader, Regime,
    RegimeError, RegimeRegistration, RegimeSpec, Storage, TrainingPlan,
};
use ftbudget_lora::{BlockLinears, LORA_OPTIONS, LoraConfig, adapter_plan_over_into};

pub const NAME: &str = "qlora";

pub const QLORA_OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "blocksize",
        values: "<int>",
        default: "64",
        help: "elements per absmax block",
    },
    OptionDoc {
        key: "double_quant",
        values: "true|false",
        default: "false",
        help: "quantize the absmax values too (QLoRA's double quantization)",
    },
    OptionDoc {
        key: "codebooks",
        values: "true|false",
        default: "true",
        help: "count bitsandbytes' per-tensor codebooks (the seed's rule leaves them out)",
    },
    OptionDoc {
        key: "prepare",
        values: "true|false",
        default: "true",
        help: "peft's prepare_model_for_kbit_training: embeddings, norms, lm_head and biases upcast to fp32",
    },
    OptionDoc {
        key: "compute_dtype",
        values: "bf16|fp16|fp32",
        default: "bf16",
        help: "bnb_4bit_compute_dtype: the dtype the 4-bit Linears dequantize to and hold their biases in",
    },
];

/// Every option of the regime: LoRA's and the storage ones.
pub const ALL_OPTIONS: &[OptionDoc] = &[
    LORA_OPTIONS[0],
    LORA_OPTIONS[1],
    LORA_OPTIONS[2],
    LORA_OPTIONS[3],
    LORA_OPTIONS[4],
    LORA_OPTIONS[5],
    LORA_OPTIONS[6],
    LORA_OPTIONS[7],
    LORA_OPTIONS[9],
    QLORA_OPTIONS[0],
    QLORA_OPTIONS[1],
    QLORA_OPTIONS[2],
    QLORA_OPTIONS[3],
    QLORA_OPTIONS[4],
];

pub struct Qlora {
    pub config: LoraConfig,
    pub layout: Nf4Layout,
    /// bitsandbytes' `bnb_4bit_compute_dtype`.
    pub compute_dtype: DType,
    /// peft's `prepare_model_for_kbit_training`: the parameters outside the 4-bit weights in fp32.
    pub prepare: bool,
}

impl Regime for Qlora {
    fn spec(&self) -> String {
        let mut opts = self.config.spec_options();
        if self.layout.blocksize != 64 {
            opts.push(format!("blocksize={}", self.layout.blocksize));
        }
        if self.layout.double_quant {
            opts.push("double_quant=true".into());
        }
        if !self.layout.codebooks {
            opts.push("codebooks=false".into());
        }
        if self.compute_dtype != DType::BF16 {
            opts.push(format!("compute_dtype={}", self.compute_dtype));
        }
        if !self.prepare {
            opts.push("prepare=false".into());
        }
        format!("{NAME}:{}", opts.join(","))
    }

    fn label(&self) -> String {
        let unprepared = if self.prepare {
            ""
        } else {
            " (base as loaded)"
        };
        format!("QLoRA {}{unprepared}", self.config.label_suffix())
    }

    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError> {
        let layout = self.layout;
        let block_linears = BlockLinears {
            weights: Storage::Nf4(layout),
            frozen_biases: Storage::Dense {
                dtype: self.compute_dtype,
            },
            other_params: if self.prepare {
                Storage::Dense { dtype: DType::F32 }
            } else {
                Storage::Policy
            },
        };
        adapter_plan_over_into(NAME, model, &self.config, block_linears, out)?;
        // bitsandbytes dequantizes one NF4 weight at a time to the compute dtype (forward and
        // again in backward) and frees it after the matmul: one largest-weight buffer.
        let largest = model
            .modules
            .iter()
            .enumerate()
            .filter(|(_, m)| m.quantizable())
            .max_by_key(|(_, m)| m.in_features * m.out_features);
        if let Some((module, m)) = largest {
            out.push_activation_term(ActivationTerm {
                name: "dequantized weight",
                module: Some(module),
                per_token: 0,
                fixed: m.in_features * m.out_features,
                dtype: ActivationDtype::Dense(self.compute_dtype),
                freed_in_forward: true,
            });
        }
        Ok(())
    }
}

fn build(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, ALL_OPTIONS)?;
    let config = LoraConfig::from_reader(&reader, false)?;
    let blocksize = reader.positive("blocksize", 64, 1 << 16)?;
    let layout = Nf4Layout {
        blocksize,
        double_quant: reader.flag("double_quant", false)?,
        nested_blocksize: 256,
        codebooks: reader.flag("codebooks", true)?,
        absmax_dtype: DType::F32,
    };
    let compute_dtype = reader.parse("compute_dtype", DType::BF16, "bf16, fp16 or fp32")?;
    if !matches!(compute_dtype, DType::BF16 | DType::F16 | DType::F32) {
        return Err(reader.invalid(
            "compute_dtype",
            &compute_dtype.to_string(),
            "bf16, fp16 or fp32",
        ));
    }
    let prepare = reader.flag("prepare", true)?;
    Ok(Box::new(Qlora {
        config,
        layout,
        compute_dtype,
        prepare,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: NAME,
        summary: "QLoRA: LoRA over block Linears stored in bitsandbytes NF4",
        options: ALL_OPTIONS,
        rank_option: Some("r"),
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(spec: &str) -> Result<Box<dyn Regime>, RegimeError> {
        build(&spec.parse().unwrap())
    }

    #[test]
    fn compute_dtype_is_read_and_written_back() {
        assert_eq!(built("qlora:r=8").unwrap().spec(), "qlora:r=8");
        assert_eq!(
            built("qlora:r=8,compute_dtype=fp32").unwrap().spec(),
            "qlora:r=8,compute_dtype=fp32"
        );
        assert_eq!(
            built("qlora:r=8,compute_dtype=bfloat16").unwrap().spec(),
            "qlora:r=8"
        );
        assert_eq!(
            built("qlora:r=8,prepare=false").unwrap().spec(),
            "qlora:r=8,prepare=false"
        );
        assert_eq!(built("qlora:r=8,prepare=true").unwrap().spec(), "qlora:r=8");
        for bad in ["int8", "uint8"] {
            let err = built(&format!("qlora:r=8,compute_dtype={bad}"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("compute_dtype"), "{err}");
        }
    }
}

//! QLoRA (Dettmers et al. 2023): LoRA adapters over a frozen base whose Linear weights inside the
//! transformer blocks are stored in 4-bit NormalFloat exactly as bitsandbytes lays them out
//! (packed `ceil(n/2)` bytes, an absmax per block, nested absmax and offset under double
//! quantization, per-tensor codebooks). Embeddings, norms and the lm_head stay 16-bit.

use ftbudget_core::{
    ActivationDtype, ActivationTerm, DType, ModelShape, Nf4Layout, OptionDoc, OptionReader, Regime,
    RegimeError, RegimeRegistration, RegimeSpec, Storage, TrainingPlan,
};
use ftbudget_lora::{LORA_OPTIONS, LoraConfig, adapter_plan_into};

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
];

pub struct Qlora {
    pub config: LoraConfig,
    pub layout: Nf4Layout,
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
        format!("{NAME}:{}", opts.join(","))
    }

    fn label(&self) -> String {
        format!("QLoRA {}", self.config.label_suffix())
    }

    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError> {
        let layout = self.layout;
        adapter_plan_into(NAME, model, &self.config, Storage::Nf4(layout), out)?;
        // bitsandbytes dequantizes one NF4 weight at a time to the compute dtype (forward and
        // again in backward) and frees it after the matmul: one largest-weight buffer.
        let largest = model
            .modules
            .iter()
            .enumerate()
            .filter(|(_, m)| m.in_blocks())
            .max_by_key(|(_, m)| m.in_features * m.out_features);
        if let Some((module, m)) = largest {
            out.push_activation_term(ActivationTerm {
                name: "dequantized weight",
                module: Some(module),
                per_token: 0,
                fixed: m.in_features * m.out_features,
                dtype: ActivationDtype::Compute,
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
    Ok(Box::new(Qlora { config, layout }))
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

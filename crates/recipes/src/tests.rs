//! The recipes of fixtures/recipes/ (copied from the tools' own repositories), each mapped by
//! hand from its text and the tools' documented defaults.

use super::*;
use ftbudget_core::{AttentionImpl, Checkpointing, DType, Optimizer, Precision};
use std::path::PathBuf;

fn fixture(rel: &str) -> Recipe {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/recipes")
        .join(rel);
    read_recipe(&path, None).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

struct Expected {
    file: &'static str,
    format: RecipeFormat,
    model: Option<&'static str>,
    regime: &'static str,
    batch: u64,
    seq: u64,
    precision: Precision,
    base: DType,
    optimizer: Optimizer,
    checkpointing: Checkpointing,
    attention: AttentionImpl,
    zero: u8,
}

const AX: RecipeFormat = RecipeFormat::Axolotl;
const LF: RecipeFormat = RecipeFormat::LlamaFactory;
const TT: RecipeFormat = RecipeFormat::Torchtune;
const FULL: Checkpointing = Checkpointing::Full;
/// LLaMA-Factory's `use_reentrant_gc` default (model_args.py) and axolotl's (normalize_config
/// sets `use_reentrant: true` when no kwargs are given), passed as `use_reentrant`.
const REENTRANT: Checkpointing = Checkpointing::Reentrant;
const FLASH: AttentionImpl = AttentionImpl::Flash;
const SDPA: AttentionImpl = AttentionImpl::Sdpa;
const ALL_LINEAR_8: &str = "lora:r=8,targets=all-linear";
const TT_TARGETS: &str = "targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj";

#[rustfmt::skip]
fn expected() -> Vec<Expected> {
    use DType::*;
    use Optimizer::*;
    use Precision::*;
    let e = |file, format, model, regime, batch, seq, precision, base, optimizer, checkpointing, attention, zero| Expected {
        file, format, model, regime, batch, seq, precision, base, optimizer, checkpointing, attention, zero,
    };
    vec![
        // axolotl: 8-bit LoRA on all linears, adamw_bnb_8bit, bf16 auto, checkpointing, flash.
        e("axolotl/llama-3_lora-8b.yml", AX, Some("NousResearch/Meta-Llama-3-8B"), "lora:r=32,targets=all-linear,modules_to_save=embed_tokens+lm_head,base=int8", 2, 4096, AmpBf16, F32, AdamW8bit, REENTRANT, FLASH, 0),
        e("axolotl/llama-3_instruct-lora-8b.yml", AX, Some("NousResearch/Meta-Llama-3-8B-Instruct"), "lora:r=32,targets=all-linear,base=int8", 2, 4096, AmpBf16, F32, AdamW8bit, REENTRANT, FLASH, 0),
        e("axolotl/llama-2_lora.yml", AX, Some("NousResearch/Llama-2-7b-hf"), "lora:r=32,targets=all-linear,base=int8", 2, 4096, AmpBf16, F32, AdamW8bit, REENTRANT, FLASH, 0),
        e("axolotl/mistral_lora.yml", AX, Some("mistralai/Mistral-7B-v0.1"), "lora:r=32,targets=all-linear,base=int8", 2, 8192, AmpBf16, F32, AdamW8bit, REENTRANT, FLASH, 0),
        // QLoRA: double quantization (axolotl's bnb defaults), fp32 non-quantized parameters,
        // paged_adamw_32bit (bitsandbytes' in-place 32-bit AdamW: no step temporaries).
        e("axolotl/llama-3_qlora.yml", AX, Some("NousResearch/Meta-Llama-3-8B"), "qlora:r=32,targets=all-linear,double_quant=true", 2, 4096, AmpBf16, F32, AdamWFused, REENTRANT, FLASH, 0),
        e("axolotl/mistral_qlora.yml", AX, Some("mistralai/Mistral-7B-v0.1"), "qlora:r=32,targets=all-linear,double_quant=true", 2, 8192, AmpBf16, F32, AdamW8bit, REENTRANT, FLASH, 0),
        e("axolotl/llama-3_lora-1b.yml", AX, Some("NousResearch/Llama-3.2-1B"), "lora:r=16,targets=gate_proj+down_proj+up_proj+q_proj+v_proj+k_proj+o_proj", 2, 2048, AmpBf16, BF16, AdamW8bit, REENTRANT, FLASH, 0),
        // Full fine-tuning of a bf16 model: pure bf16.
        e("axolotl/llama-3_fft-8b.yaml", AX, Some("NousResearch/Meta-Llama-3.1-8B"), "full-ft", 1, 8192, Bf16, BF16, AdamW8bit, FULL, FLASH, 0),
        // LLaMA-Factory: checkpointing on, lora_target all, batch 1, cutoff 2048.
        e("llama-factory/train_lora_qwen3_lora_sft.yaml", LF, Some("Qwen/Qwen3-4B-Instruct-2507"), ALL_LINEAR_8, 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 0),
        e("llama-factory/train_lora_qwen3_lora_pretrain.yaml", LF, Some("Qwen/Qwen3-4B-Instruct-2507"), ALL_LINEAR_8, 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 0),
        e("llama-factory/extras_loraplus_llama3_lora_sft.yaml", LF, Some("meta-llama/Meta-Llama-3-8B-Instruct"), ALL_LINEAR_8, 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 0),
        e("llama-factory/extras_pissa_llama3_lora_sft.yaml", LF, Some("meta-llama/Meta-Llama-3-8B-Instruct"), ALL_LINEAR_8, 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 0),
        e("llama-factory/extras_fsdp_qlora_llama3_lora_sft.yaml", LF, Some("meta-llama/Meta-Llama-3-8B-Instruct"), "qlora:r=8,targets=all-linear,double_quant=true,prepare=false", 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 0),
        e("llama-factory/train_qlora_qwen3_lora_sft_otfq.yaml", LF, Some("Qwen/Qwen3-4B-Instruct-2507"), "qlora:r=8,targets=all-linear,double_quant=true,prepare=false", 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 0),
        // ds_z3_config.json is not beside the copy: the stage comes from its name.
        e("llama-factory/train_lora_qwen3_lora_sft_ds3.yaml", LF, Some("Qwen/Qwen3-4B-Instruct-2507"), ALL_LINEAR_8, 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 3),
        e("llama-factory/train_full_qwen3_full_sft.yaml", LF, Some("Qwen/Qwen3-4B-Instruct-2507"), "full-ft", 1, 2048, AmpBf16, BF16, AdamWFused, REENTRANT, SDPA, 3),
        // torchtune: pure bf16, max_seq_len null (the default 2048 stands in).
        e("torchtune/llama3_8B_lora_single_device.yaml", TT, Some("llama-3-8b"), "lora:r=8,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj", 2, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/llama3_1_8B_lora_single_device.yaml", TT, Some("llama-3-8b"), "lora:r=8,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj", 2, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/llama2_7B_lora_single_device.yaml", TT, Some("llama-2-7b"), "lora:r=8,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj", 2, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/llama3_8B_dora_single_device.yaml", TT, Some("llama-3-8b"), "dora:r=8,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj", 2, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/llama3_8B_qlora_single_device.yaml", TT, Some("llama-3-8b"), "qlora:r=8,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj,double_quant=true,prepare=false", 2, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/mistral_7B_lora_single_device.yaml", TT, Some("mistral-7b"), "lora:r=64,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj+lm_head", 4, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/gemma_2B_lora_single_device.yaml", TT, Some("gemma-2b"), "lora:r=64,targets=q_proj+v_proj+o_proj+gate_proj+up_proj+down_proj", 4, 2048, Bf16, BF16, AdamWFused, FULL, SDPA, 0),
        e("torchtune/llama3_8B_full_single_device.yaml", TT, Some("llama-3-8b"), "full-ft", 2, 2048, Bf16, BF16, AdamW8bit, FULL, SDPA, 0),
    ]
}

#[test]
fn every_fixture_recipe_maps_as_read_by_hand() {
    assert!(TT_TARGETS.starts_with("targets="));
    for x in expected() {
        let r = fixture(x.file);
        let s = &r.settings;
        let got = (
            r.format,
            r.model.as_deref(),
            r.regime.as_str(),
            s.workload.batch,
            s.workload.seq,
            s.precision,
            s.frozen_dtype(),
            s.optimizer,
            s.activations.checkpointing,
            s.activations.attention,
            s.sharding.zero_stage,
        );
        let want = (
            x.format,
            x.model,
            x.regime,
            x.batch,
            x.seq,
            x.precision,
            x.base,
            x.optimizer,
            x.checkpointing,
            x.attention,
            x.zero,
        );
        assert_eq!(got, want, "{}", x.file);
    }
}

#[test]
fn unmodelled_keys_are_listed() {
    let r = fixture("torchtune/llama3_8B_lora_single_device.yaml");
    let keys: Vec<&str> = r.unmodelled.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["tokenizer.max_seq_len"]);
    // CEWithChunkedOutputLoss is the chunked loss of the step timeline.
    assert_eq!(r.settings.step.loss, ftbudget_core::LossKind::Chunked);
    let r = fixture("axolotl/llama-3_lora-8b.yml");
    let keys: Vec<&str> = r.unmodelled.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["lora_dropout"]);
    assert_eq!(r.grad_accum, 4);
}

fn parse(text: &str) -> Result<Recipe, RecipeError> {
    parse_recipe("test.yml", text, None, None)
}

#[test]
fn contradictions_name_the_key() {
    let err = parse("base_model: x\nadapter: qlora\nlora_r: 8\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "recipe key `adapter`: qlora needs load_in_4bit: true"
    );
    let err = parse("base_model: x\nadapter: lora\nlora_r: 8\noptimizer: lion_8bit\n").unwrap_err();
    assert!(
        matches!(&err, RecipeError::Invalid { key, .. } if key == "optimizer"),
        "{err}"
    );
    let err = parse("base_model: x\nadapter: lora\n").unwrap_err();
    assert!(
        matches!(&err, RecipeError::Missing { key, .. } if key == "lora_r"),
        "{err}"
    );
    let err = parse("{\"peft_type\": \"IA3\"}").unwrap_err();
    assert!(
        matches!(&err, RecipeError::Invalid { key, .. } if key == "peft_type"),
        "{err}"
    );
    assert!(matches!(
        parse("foo: 1\n").unwrap_err(),
        RecipeError::Undetected { .. }
    ));
    assert!(matches!(
        parse("base_model: [\n").unwrap_err(),
        RecipeError::Syntax { .. }
    ));
}

#[test]
fn forced_format_wins_over_detection() {
    let text = "model_name_or_path: org/m\nper_device_train_batch_size: 2\n";
    let r = parse_recipe("a.yml", text, None, Some(RecipeFormat::LlamaFactory)).unwrap();
    assert_eq!(r.format, RecipeFormat::LlamaFactory);
    assert_eq!(r.regime, "lora:r=8,targets=all-linear");
    let r = parse_recipe("a.yml", text, None, None).unwrap();
    assert_eq!(r.format, RecipeFormat::Trl);
    assert_eq!(r.regime, "full-ft");
    assert_eq!(
        "torchtune".parse::<RecipeFormat>().unwrap(),
        RecipeFormat::Torchtune
    );
    assert!("tune".parse::<RecipeFormat>().is_err());
}

#[test]
fn peft_adapter_config_reads_layers_and_rank_pattern() {
    let text = r#"{"peft_type": "LORA", "base_model_name_or_path": "org/m", "r": 8,
        "target_modules": ["v_proj", "q_proj"], "layers_to_transform": [0, 2],
        "rank_pattern": {"q_proj": 16}, "alpha_pattern": {}, "bias": "none",
        "modules_to_save": null, "use_dora": false}"#;
    let r = parse(text).unwrap();
    assert_eq!(
        r.regime,
        "lora:r=8,targets=v_proj+q_proj,layers=0+2,rank_pattern=q_proj:16"
    );
    assert_eq!(r.model.as_deref(), Some("org/m"));
}

#[test]
fn trl_example_config_takes_trainingarguments_defaults() {
    // TRL's examples/cli_configs/example_config.yaml names only the model and the optimizer's
    // learning rate: no SFT key, so transformers' TrainingArguments defaults (batch 8, no
    // checkpointing, fp32) and TRL ModelConfig's float32 model; no use_peft: full fine-tuning.
    let r = fixture("trl/examples_cli_configs_example_config.yaml");
    assert_eq!(r.format, RecipeFormat::Trl);
    assert_eq!(r.model.as_deref(), Some("Qwen/Qwen2.5-0.5B"));
    assert_eq!(r.regime, "full-ft");
    let s = &r.settings;
    assert_eq!(
        (s.workload.batch, s.precision, s.frozen_dtype()),
        (8, Precision::Fp32, DType::F32)
    );
    assert_eq!(s.activations.checkpointing, Checkpointing::None);
}

#[test]
fn trl_sft_json_with_peft_and_4bit() {
    let text = r#"{"model_name_or_path": "org/m", "use_peft": true, "lora_r": 32,
        "lora_target_modules": ["q_proj", "k_proj"], "load_in_4bit": true,
        "use_bnb_nested_quant": true, "per_device_train_batch_size": 4, "max_length": 4096,
        "dtype": "bfloat16", "optim": "paged_adamw_8bit"}"#;
    let r = parse(text).unwrap();
    assert_eq!(
        r.regime,
        "qlora:r=32,targets=q_proj+k_proj,double_quant=true,prepare=false"
    );
    let s = &r.settings;
    // SFTConfig: bf16 and gradient checkpointing on by default.
    assert_eq!(
        (
            s.workload.batch,
            s.workload.seq,
            s.precision,
            s.frozen_dtype(),
            s.optimizer
        ),
        (
            4,
            4096,
            Precision::AmpBf16,
            DType::BF16,
            Optimizer::AdamW8bit
        )
    );
    assert_eq!(s.activations.checkpointing, Checkpointing::Full);
    let err = parse(r#"{"model_name_or_path": "m", "load_in_4bit": true}"#).unwrap_err();
    assert!(
        matches!(&err, RecipeError::Contradiction { key, .. } if key == "load_in_4bit"),
        "{err}"
    );
}

/// The keys that change the step's peak, as axolotl and torchtune document them: the loss
/// kernels, activation offloading (axolotl's `gradient_checkpointing: offload` included), the
/// optimizer in the backward and the fused optimizers.
#[test]
fn step_keys_reach_the_step_settings() {
    use ftbudget_core::LossKind;
    let axolotl = |extra: &str| {
        let text =
            format!("base_model: NousResearch/Llama-3.2-1B\nadapter: lora\nlora_r: 8\n{extra}");
        parse_recipe("a.yml", &text, None, Some(AX)).unwrap()
    };
    let r = axolotl("cut_cross_entropy: true\nactivation_offloading: true\n");
    assert_eq!(r.settings.step.loss, LossKind::Fused);
    assert!(r.settings.step.activation_offload);
    assert_eq!(r.settings.optimizer, Optimizer::AdamWFused);
    assert!(r.unmodelled.is_empty(), "{:?}", r.unmodelled);
    let r = axolotl("liger_fused_linear_cross_entropy: true\nliger_rms_norm: true\n");
    assert_eq!(r.settings.step.loss, LossKind::Fused);
    let keys: Vec<&str> = r.unmodelled.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["liger_rms_norm"]);
    let r = axolotl(
        "chunked_cross_entropy: true\ngradient_checkpointing: offload\noptimizer: adamw_torch\n",
    );
    assert_eq!(r.settings.step.loss, LossKind::Chunked);
    assert_eq!(r.settings.activations.checkpointing, Checkpointing::Full);
    assert!(r.settings.step.activation_offload);
    assert_eq!(r.settings.optimizer, Optimizer::AdamW);
    let torchtune = "model:\n  _component_: torchtune.models.llama3_2.llama3_2_3b\n\
        loss:\n  _component_: torchtune.modules.loss.CEWithChunkedOutputLoss\n\
        optimizer:\n  _component_: torch.optim.AdamW\n\
        optimizer_in_bwd: True\nenable_activation_offloading: True\n";
    let r = parse_recipe("t.yaml", torchtune, None, Some(TT)).unwrap();
    assert_eq!(r.settings.step.loss, LossKind::Chunked);
    assert!(r.settings.step.optimizer_in_backward);
    assert!(r.settings.step.activation_offload);
    assert_eq!(r.settings.optimizer, Optimizer::AdamW);
}

/// `use_reentrant` picks torch.utils.checkpoint's mode: axolotl's and TRL's
/// `gradient_checkpointing_kwargs` (absent: axolotl sets `use_reentrant: true`; transformers
/// passes `use_reentrant=False`), and LLaMA-Factory's `use_reentrant_gc` (default true). Other
/// kwargs are reported as not modelled.
#[test]
fn use_reentrant_picks_the_checkpointing_mode() {
    let axolotl = |kwargs: &str| {
        let text = format!(
            "base_model: org/m\nadapter: lora\nlora_r: 8\nlora_target_linear: true\ngradient_checkpointing: true\n{kwargs}"
        );
        parse_recipe("a.yml", &text, None, Some(RecipeFormat::Axolotl)).unwrap()
    };
    let on = axolotl("gradient_checkpointing_kwargs:\n  use_reentrant: true\n");
    assert_eq!(on.settings.activations.checkpointing, REENTRANT);
    assert!(on.unmodelled.is_empty(), "{:?}", on.unmodelled);
    let off = axolotl("gradient_checkpointing_kwargs:\n  use_reentrant: false\n  debug: true\n");
    assert_eq!(off.settings.activations.checkpointing, FULL);
    assert_eq!(off.unmodelled.len(), 1, "{:?}", off.unmodelled);
    assert_eq!(off.unmodelled[0].key, "gradient_checkpointing_kwargs.debug");
    // axolotl's own default: reentrant unless kwargs, `unfrozen_parameters` or `rl` are set.
    assert_eq!(axolotl("").settings.activations.checkpointing, REENTRANT);
    assert_eq!(
        axolotl("rl: dpo\n").settings.activations.checkpointing,
        FULL
    );
    let lf = |extra: &str| {
        let text = format!("model_name_or_path: org/m\nfinetuning_type: lora\nstage: sft\n{extra}");
        parse_recipe("a.yml", &text, None, Some(RecipeFormat::LlamaFactory)).unwrap()
    };
    assert_eq!(lf("").settings.activations.checkpointing, REENTRANT);
    assert_eq!(
        lf("use_reentrant_gc: false\n")
            .settings
            .activations
            .checkpointing,
        FULL
    );
    assert_eq!(
        lf("disable_gradient_checkpointing: true\n")
            .settings
            .activations
            .checkpointing,
        Checkpointing::None
    );
}

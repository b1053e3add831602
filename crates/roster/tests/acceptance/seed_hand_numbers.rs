//! The seed lab's hand arithmetic (seed/lab-01-lora-counts.txt, Blocks A and B, Block E) for
//! MiniGPT: n_layer 4, n_head 4, d_model 64, d_ff 256. Each expected figure is typed from the
//! lab's arithmetic, never from our output.

use super::{estimate, plan};
use ftbudget_core::{ActivationModel, MemorySettings, ModuleGroup, TransformerSpec};

fn minigpt() -> ftbudget_core::ModelShape {
    TransformerSpec::minigpt().build().unwrap()
}

#[test]
fn linear_weights_per_layer_are_49152() {
    // 4 * 64 * 64 + 64 * 256 + 256 * 64 = 16,384 + 16,384 + 16,384.
    let model = minigpt();
    let per_layer: u64 = model
        .modules
        .iter()
        .filter(|m| m.in_blocks())
        .map(|m| m.weight_numel() * m.count / model.dims.layers)
        .sum();
    assert_eq!(per_layer, 49_152);
    // Full FT trains them all, plus the tied 512 x 64 embedding and 9 RMSNorm gains of 64.
    let full = plan("full-ft", &model);
    assert_eq!(
        full.trainable_params().unwrap(),
        4 * 49_152 + 512 * 64 + 9 * 64
    );
    assert_eq!(full.frozen_params().unwrap(), 0);
}

#[test]
fn lora_r8_is_9216_per_layer() {
    let model = minigpt();
    let layers = model.dims.layers;
    let trainable = |spec: &str| plan(spec, &model).trainable_params().unwrap();
    // Attention: 4 * (64 + 64) * 8 = 4,096 per layer.
    assert_eq!(trainable("lora:r=8,targets=attn"), 4_096 * layers);
    // MLP: (64 + 256) * 8 + (256 + 64) * 8 = 2,560 + 2,560 = 5,120 per layer.
    assert_eq!(trainable("lora:r=8,targets=mlp"), 5_120 * layers);
    // All Linears: 9,216 per layer; the embedding and lm_head are not targets.
    assert_eq!(trainable("lora:r=8"), 9_216 * layers);
    // QLoRA and DoRA train the same adapters (DoRA adds magnitudes, tested elsewhere).
    assert_eq!(trainable("qlora:r=8"), 9_216 * layers);
}

#[test]
fn seed_activations_are_2_mib() {
    // batch 16 x seq 32 x d_model 64 x n_layer 4 x 16 B = 2,097,152 B, whatever the regime.
    let model = minigpt();
    for spec in ["full-ft", "lora:r=8", "qlora:r=8", "dora:r=8"] {
        let e = estimate(spec, &model, &MemorySettings::seed());
        assert_eq!(e.activations, 2_097_152, "{spec}");
    }
}

#[test]
fn attention_ratio_at_h64_is_25_percent_which_is_2r_over_h() {
    // Block E: (64 + 64) * 8 / 64^2 = 1,024 / 4,096 = 25% = 2r/h (the lab says r/h).
    let model = minigpt();
    let attention_weights: u64 = model
        .modules
        .iter()
        .filter(|m| m.group == ModuleGroup::Attention)
        .map(|m| m.weight_numel() * m.count)
        .sum();
    let lora = plan("lora:r=8,targets=attn", &model)
        .trainable_params()
        .unwrap();
    assert_eq!(attention_weights, 4 * 4 * 64 * 64);
    assert_eq!(lora * 4, attention_weights); // exactly 25%
    assert_eq!(lora * 64, attention_weights * 2 * 8); // ratio = 2r/h with r = 8, h = 64
}

#[test]
fn seed_mixed_full_ft_is_16_bytes_per_param() {
    // ZeRO paper: 2 (fp16 weights) + 2 (fp16 grads) + 12 (fp32 master, m, v) = 16 B per param.
    let model = minigpt();
    let mut settings = MemorySettings::seed();
    settings.activations.model = ActivationModel::None;
    let e = estimate("full-ft", &model, &settings);
    let params = 4 * 49_152 + 512 * 64 + 9 * 64;
    assert_eq!(e.weights, params * 6);
    assert_eq!(e.gradients, params * 2);
    assert_eq!(e.optimizer, params * 8);
    assert_eq!(e.total, params * 16);
}

#[test]
fn lora_bytes_follow_the_seed_rules() {
    // LoRA r=8: frozen base in fp16 (2 B), adapters at 16 B each (weights 6, grads 2, Adam 8).
    let model = minigpt();
    let e = estimate("lora:r=8", &model, &MemorySettings::seed());
    let base = 4 * 49_152 + 512 * 64 + 9 * 64;
    let adapters = 4 * 9_216;
    assert_eq!(e.weights, base * 2 + adapters * 6);
    assert_eq!(e.gradients, adapters * 2);
    assert_eq!(e.optimizer, adapters * 8);
}

#[test]
fn seed_nf4_rule_is_half_a_byte_plus_an_fp32_absmax_per_64_weights() {
    // QLoRA with the seed's rule (no codebooks): each block Linear weight of n elements takes
    // n/2 + 4 * n/64 bytes; everything else as LoRA (the seed keeps the rest in fp16: no
    // `prepare_model_for_kbit_training` upcast).
    let model = minigpt();
    let settings = MemorySettings::seed();
    let lora = estimate("lora:r=8", &model, &settings);
    let qlora = estimate("qlora:r=8,codebooks=false,prepare=false", &model, &settings);
    let linear_weights = 4 * 49_152;
    let nf4 = linear_weights / 2 + 4 * linear_weights / 64;
    assert_eq!(lora.weights - qlora.weights, linear_weights * 2 - nf4);
}

//! Autocast keeps a 16-bit copy of a weight only when the weight is not already stored in the
//! compute dtype: with the frozen base loaded in bf16, LoRA under bf16 autocast saves copies of
//! the fp32 adapters only.

use super::estimate;
use ftbudget_core::{DType, MemorySettings, TransformerSpec};

#[test]
fn a_bf16_base_needs_no_weight_casts_under_bf16_autocast() {
    let model = TransformerSpec::minigpt().build().unwrap();
    let mut fp32_base = MemorySettings::pytorch();
    fp32_base.base_dtype = Some(DType::F32);
    let bf16_base = MemorySettings::pytorch();
    let with_copies = estimate("lora:r=8", &model, &fp32_base).weight_casts;
    let without = estimate("lora:r=8", &model, &bf16_base).weight_casts;
    // Hand count of the frozen fp32 matmul weights whose bf16 copy is saved: the block Linears,
    // 4 x 49,152 = 196,608, less the first block's q, k, v (3 x 64 x 64 = 12,288: nothing
    // upstream of them needs a gradient when the embedding is frozen), plus the tied
    // embedding used by the lm_head, 512 x 64 = 32,768; 2 bytes each.
    assert_eq!(with_copies - without, (196_608 - 12_288 + 32_768) * 2);
    // What remains are the fp32 adapters: A (8 x in) and B (out x 8) of the 24 adapted Linears,
    // 4 layers x 9,216 elements (the seed lab's Block B), less the first block's q, k, v lora_A
    // (3 x 8 x 64), 2 bytes each.
    assert_eq!(without, (4 * 9_216 - 3 * 8 * 64) * 2);
}

//! bitsandbytes NF4 storage (fixtures/nf4/nf4_bytes.json, bitsandbytes 0.50.2 on CPU) against
//! [`Nf4Layout::tensor_bytes`].

use ftbudget_core::Nf4Layout;
use serde_json::Value;

const NF4: &str = include_str!("../../../fixtures/nf4/nf4_bytes.json");

fn bytes(v: &Value, key: &str) -> u64 {
    v[key]["bytes"].as_u64().unwrap_or(0)
}

#[test]
fn nf4_storage_matches_bitsandbytes_byte_for_byte() {
    let doc: Value = serde_json::from_str(NF4).unwrap();
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 32);
    for r in records {
        let numel = r["numel"].as_u64().unwrap();
        let double_quant = r["compress_statistics"].as_bool().unwrap();
        let layout = Nf4Layout::bitsandbytes(double_quant);
        let total = r["total_in_memory_bytes"].as_u64().unwrap();
        assert_eq!(layout.tensor_bytes(numel), total, "{r}");
        let without_codebooks = Nf4Layout {
            codebooks: false,
            ..layout
        };
        assert_eq!(
            without_codebooks.tensor_bytes(numel),
            r["total_excluding_codebooks_bytes"].as_u64().unwrap(),
            "{r}"
        );
        // The layout's constants are bitsandbytes': the block sizes, the codebooks (16 fp32
        // values, plus 256 with double quantization) and, without double quantization, fp32
        // absmax statistics.
        assert_eq!(r["blocksize"].as_u64(), Some(layout.blocksize));
        assert_eq!(
            layout.tensor_bytes(numel) - without_codebooks.tensor_bytes(numel),
            bytes(r, "code") + bytes(r, "nested_code"),
            "{r}"
        );
        if double_quant {
            assert_eq!(
                r["nested_blocksize"].as_u64(),
                Some(layout.nested_blocksize)
            );
        } else {
            let absmax_elements = r["absmax"]["shape"][0].as_u64().unwrap();
            assert_eq!(
                bytes(r, "absmax"),
                absmax_elements * layout.absmax_dtype.bytes()
            );
        }
    }
}

/// Dettmers et al. 2023 (QLoRA), section 3: double quantization costs 8/64 + 32/(64*256) =
/// 0.127 bits per parameter instead of 32/64 = 0.5.
#[test]
fn qlora_double_quant_costs_0_127_bits_per_param() {
    let numel: u64 = 4096 * 4096 * 64;
    for (double_quant, expected) in [(true, 0.127), (false, 0.5)] {
        let layout = Nf4Layout {
            codebooks: false,
            ..Nf4Layout::bitsandbytes(double_quant)
        };
        let overhead_bits = (layout.tensor_bytes(numel) * 8 - 4 * numel) as f64 / numel as f64;
        assert!((overhead_bits - expected).abs() < 0.0005, "{overhead_bits}");
    }
}

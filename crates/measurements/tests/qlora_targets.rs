//! QLoRA's activations do not hang on which Linears are adapted: bitsandbytes' `Linear4bit`
//! returns its input's dtype whether or not an adapter sits on it, so over the prepared fp32
//! stream an unadapted gate/up projection's output, and what the MLP keeps of it, are fp32 too.
//! Held to the bytes a forward saves for backward (saved-tensor hooks,
//! `tools/measure-peak/saved_qlora_targets.py`) on the QLoRA record's model and settings
//! (llama-h64-l2-v2048, prepared, bf16 autocast, batch 2 x 64, sdpa) with LoRA r8 on all
//! Linears and on q_proj and v_proj only. Counting the unadapted MLP's outputs in 16 bits was
//! 11% low on the latter.

use ftbudget_measurements::peak::{parse_peak_records, peak_inputs};

const PEAKS: &str = include_str!("../../../fixtures/memory/measured_peak_qlora.json");

#[test]
fn unadapted_4bit_linears_return_their_input_dtype() {
    let records = parse_peak_records(PEAKS).unwrap();
    let record = records
        .iter()
        .find(|r| r.id == "llama-h64-l2-v2048|qlora-r8|b2s64|autocast-bf16|sdpa")
        .unwrap();
    let (model, _, settings) = peak_inputs(record).unwrap();
    let registry = ftbudget_roster::registry().unwrap();
    for (targets, measured) in [("all-linear", 2_445_828u64), ("q_proj+v_proj", 2_174_980)] {
        let spec = format!("qlora:r=8,targets={targets}");
        let plan = registry.build(&spec).unwrap().plan(&model).unwrap();
        let e = ftbudget_core::estimate_memory(&model, &plan, &settings).unwrap();
        let saved = e.activations + e.weight_casts;
        let error = (saved as f64 - measured as f64) / measured as f64;
        assert!(
            error.abs() < 0.015,
            "{targets}: {saved} against {measured} ({:+.2}%)",
            100.0 * error
        );
    }
}

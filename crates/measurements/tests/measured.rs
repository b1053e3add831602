//! ftbudget against measured PyTorch training steps: weights, gradients and optimizer state
//! exactly, activations within 10% on every record.

mod common;

use ftbudget_measurements::{activation_error, parse_records, predict};
use std::collections::BTreeMap;

const MEASURED: &str = include_str!("../../../fixtures/memory/measured_memory.json");
const EXTRA: &str = include_str!("../../../fixtures/memory/measured_memory_extra.json");

#[test]
fn every_measured_record_matches() {
    let mut records = parse_records(MEASURED).unwrap();
    assert_eq!(records.len(), 180);
    records.extend(parse_records(EXTRA).unwrap());
    assert_eq!(records.len(), 360);
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let mut failures = Vec::new();
    for r in &records {
        let e = predict(r).unwrap();
        common::assert_state_buckets_exact(r, &e);
        assert_eq!(
            e.weight_casts, r.activations.weight_cast_bytes_dedup,
            "{} weight casts",
            r.id
        );
        let err = activation_error(r, &e);
        let key = format!(
            "{}|{}|{}",
            r.shape.family, r.attn_implementation_used, r.dtype_mode
        );
        let slot = worst.entry(key).or_insert((0.0, String::new()));
        if err.abs() > slot.0.abs() {
            *slot = (err, r.id.clone());
        }
        if err.abs() > 0.10 {
            failures.push(format!("{}: {:+.1}%", r.id, err * 100.0));
        }
    }
    for (k, (err, id)) in &worst {
        println!("worst {k}: {:+.2}% ({id})", err * 100.0);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

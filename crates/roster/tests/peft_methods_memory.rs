//! The PEFT-method regimes against measured PyTorch training steps (`tools/measure-memory/
//! methods.py` on llama-h128-l2-gqa and qwen2-h64-l2-tied, sdpa, fp32 and autocast-bf16, 2 x 32
//! and 4 x 64, every targeted method on all-linear and on q_proj+v_proj; written to
//! `fixtures/peft/methods_memory.json`): weights (buffers included), gradients and AdamW state
//! exactly; activations (buffers an adapter saves left out: the weights hold them) within each
//! method's recorded bound, every one within 10%.

use ftbudget_measurements::{parse_records, settings, shape};

const MEASURED: &str = include_str!("../../../fixtures/peft/methods_memory.json");

/// Worst activation error per method over its records (both models, shapes, precisions and,
/// for targeted methods, both target sets), in percent, and the bound: the worst rounded up.
/// Each method's own terms follow peft 0.21.2's forward (derived with
/// `tools/measure-memory/methods_breakdown.py`): OFT, LoHa, LoKr and FourierFT are exact; the
/// rest are within 4% but LN tuning on qwen2 (+7.3%: peft's qwen2 default trains only
/// `post_attention_layernorm`; the over-count is of the order of what the first block's
/// attention keeps, which with nothing trained upstream of it should need no gradient: not
/// modelled).
const ACTIVATION_BOUNDS: &[(&str, f64, f64)] = &[
    ("ia3", -1.00, 2.0),
    ("vera", 1.25, 2.0),
    ("loha", 2.59, 3.0),
    ("lokr", -0.32, 1.0),
    ("adalora", -1.29, 2.0),
    ("oft", 0.00, 1.0),
    ("boft", -2.98, 3.0),
    ("fourierft", 0.00, 1.0),
    ("ln-tuning", 7.25, 8.0),
    ("prompt-tuning", -0.06, 1.0),
    ("prefix-tuning", -3.60, 4.0),
    ("p-tuning", -3.15, 4.0),
    ("trainable-tokens", -0.13, 1.0),
];

fn method(spec: &str) -> &str {
    spec.split(':').next().unwrap()
}

#[test]
fn measured_steps_match() {
    let records = parse_records(MEASURED).unwrap();
    assert_eq!(records.len(), 168);
    let registry = ftbudget_roster::registry().unwrap();
    let mut worst: Vec<(String, f64, String)> = Vec::new();
    for r in &records {
        let model = shape(r).unwrap();
        let plan = registry.build(&r.regime).unwrap().plan(&model).unwrap();
        let e = ftbudget_core::estimate_memory(&model, &plan, &settings(r).unwrap()).unwrap();
        let buffers = r.extra["buffer_bytes"].as_u64().unwrap();
        assert_eq!(
            plan.trainable_params().unwrap(),
            r.params.trainable_count,
            "{}",
            r.id
        );
        assert_eq!(
            e.weights,
            r.params.total_bytes + buffers,
            "{} weights",
            r.id
        );
        assert_eq!(e.gradients, r.grads.bytes, "{} gradients", r.id);
        assert_eq!(
            e.detail.optimizer_states, r.optimizer.state_bytes_excl_step,
            "{} optimizer",
            r.id
        );
        assert_eq!(
            e.detail.step_counters, r.optimizer.step_bytes,
            "{} steps",
            r.id
        );
        let measured = r.activations.activation_bytes_dedup_excl_weight_casts as f64;
        eprintln!(
            "ERR {} {:+.2}",
            r.id,
            100.0 * (e.activations as f64 - measured) / measured
        );
        let error = 100.0 * (e.activations as f64 - measured) / measured;
        let m = method(&r.regime).to_string();
        match worst.iter_mut().find(|(name, _, _)| *name == m) {
            Some(w) if error.abs() > w.1.abs() => *w = (m, error, r.id.clone()),
            Some(_) => {}
            None => worst.push((m, error, r.id.clone())),
        }
    }
    let report: String = worst
        .iter()
        .map(|(m, error, id)| format!("{m}: {error:+.2}% ({id})\n"))
        .collect();
    assert_eq!(worst.len(), ACTIVATION_BOUNDS.len(), "{report}");
    for (m, error, _) in &worst {
        let bound = ACTIVATION_BOUNDS.iter().find(|(name, _, _)| name == m);
        let Some((_, _, bound)) = bound else {
            panic!("no bound for {m}:\n{report}")
        };
        assert!(error.abs() <= *bound, "{m} past {bound}%:\n{report}");
    }
}

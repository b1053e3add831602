//! The PEFT-method regimes against measured PyTorch training steps (`tools/measure-memory/
//! methods.py` on llama-h128-l2-gqa, sdpa, fp32 and autocast-bf16, 2 x 32 and 4 x 64; written
//! to `fixtures/peft/methods_memory.json`): weights (buffers included), gradients and AdamW
//! state exactly; activations within each method's recorded bound.

use ftbudget_measurements::{parse_records, settings, shape};

const MEASURED: &str = include_str!("../../../fixtures/peft/methods_memory.json");

/// Worst activation error per method over its four steps (fp32 and autocast, 2 x 32 and 4 x 64),
/// in percent, and the bound, just above it. Within 10%: AdaLoRA, LN tuning, the prompt methods,
/// trainable tokens (IA3 at 10.0%). Stated gaps, all from the shared model's fixed recipe
/// (an adapted block saves every block input, once, in one dtype):
/// - LoHa, LoKr (-17%, -20%, autocast): each adapted module's input is cast to bf16 again for
///   the update's own matmul (autocast caches weight casts only); exact within 5% in fp32.
/// - OFT (+36%, fp32): the rotated input is a new bf16 tensor under autocast (declared, exact
///   there) but the same storage in fp32.
/// - VeRA (+22%, fp32): the sliced projections and the scaled intermediates are shared in ways
///   the per-token `2r + out` over-counts in fp32 (autocast within 7%).
/// - BOFT (-25%, autocast): the dense `in x in` rotation products are kept in fp32.
/// - FourierFT (+15%, autocast): the inverse FFT's complex intermediate is freed sooner than one
///   fp32 weight-sized tensor per module.
const ACTIVATION_BOUNDS: &[(&str, f64, f64)] = &[
    ("ia3", 10.04, 11.0),
    ("vera", 21.89, 23.0),
    ("loha", -17.48, 18.0),
    ("lokr", -19.63, 20.0),
    ("adalora", 0.15, 1.0),
    ("oft", 35.88, 37.0),
    ("boft", -25.43, 26.0),
    ("fourierft", 15.20, 16.0),
    ("ln-tuning", 0.00, 1.0),
    ("prompt-tuning", -0.06, 1.0),
    ("prefix-tuning", -2.57, 3.0),
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

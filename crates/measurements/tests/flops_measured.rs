//! The FLOP model (`ftbudget_core::flops`) against FlopCounterMode's totals for one real training
//! step (`fixtures/flops/measured_flops.json`, made by `tools/measure-flops/`): forward and
//! backward (recompute included) equal, record by record, for every family, regime, attention
//! implementation, checkpointing setting and shape measured.

use ftbudget_core::{AttentionImpl, Checkpointing, FlopSettings, FlopUnits, step_flops};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Fixture {
    /// Each model's full config.json.
    models: std::collections::BTreeMap<String, serde_json::Value>,
    records: Vec<Record>,
}

#[derive(Debug, Deserialize)]
struct Lora {
    r: u64,
    target_modules: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Record {
    id: String,
    model: String,
    regime: String,
    lora: Option<Lora>,
    attn_implementation: String,
    gradient_checkpointing: bool,
    batch: u64,
    seq: u64,
    trainable_params: u64,
    forward_flops: u128,
    backward_flops: u128,
    forward_by_op: std::collections::BTreeMap<String, u128>,
}

impl Record {
    /// The attention the counter saw. PyTorch's CPU flash kernel needs the value head as wide as
    /// the query/key head; latent attention's are not (24 and 16 here), so sdpa ran its math
    /// fallback: two `bmm`s forward and four backward, eager's figures, not FlopCounterMode's
    /// sdpa formula (which a GPU's efficient-attention kernel would get).
    fn attention(&self) -> AttentionImpl {
        let sdpa_kernel = self
            .forward_by_op
            .keys()
            .any(|op| op.contains("scaled_dot_product"));
        match self.attn_implementation.as_str() {
            "eager" => AttentionImpl::Eager,
            "sdpa" if sdpa_kernel => AttentionImpl::Sdpa,
            "sdpa" => AttentionImpl::Eager,
            other => panic!("{}: attention {other}", self.id),
        }
    }
}

const FIXTURE: &str = include_str!("../../../fixtures/flops/measured_flops.json");

/// The ftbudget regime spec of a record.
fn regime_spec(r: &Record) -> String {
    let Some(lora) = &r.lora else {
        return "full-ft".into();
    };
    let name = match r.regime.as_str() {
        "lora" | "dora" | "qlora" => r.regime.as_str(),
        other => panic!("{}: unknown regime {other}", r.id),
    };
    let mut spec = format!("{name}:r={}", lora.r);
    if let Some(list) = lora.target_modules.as_array() {
        let names: Vec<&str> = list.iter().map(|v| v.as_str().unwrap()).collect();
        spec.push_str(&format!(",targets={}", names.join("+")));
    }
    spec
}

#[test]
fn flops_equal_flop_counter_mode_for_every_record() {
    let fixture: Fixture = serde_json::from_str(FIXTURE).expect("fixture parses");
    assert!(fixture.records.len() >= 300, "{}", fixture.records.len());
    let registry = ftbudget_roster::registry().unwrap();
    let mut failures = Vec::new();
    for r in &fixture.records {
        let text = fixture.models[&r.model].to_string();
        let model = ftbudget_models::from_config_json(&text, &r.model)
            .unwrap_or_else(|e| panic!("{}: {e}", r.id));
        let spec = regime_spec(r);
        let regime = registry
            .build(&spec)
            .unwrap_or_else(|e| panic!("{}: {e}", r.id));
        let plan = regime
            .plan(&model)
            .unwrap_or_else(|e| panic!("{}: {e}", r.id));
        assert_eq!(
            plan.trainable_params().unwrap(),
            r.trainable_params,
            "{}: trainable parameters (the plan is the measured model's)",
            r.id
        );
        let settings = FlopSettings {
            batch: r.batch,
            seq: r.seq,
            attention: r.attention(),
            checkpointing: if r.gradient_checkpointing {
                Checkpointing::Full
            } else {
                Checkpointing::None
            },
            adapter_dropout: false,
            // bitsandbytes' CPU 4-bit matmul is invisible to the counter.
            nf4_forward_counted: r.regime != "qlora",
        };
        let f = step_flops(&model, &plan, &settings).unwrap();
        // The precomputed form a sweep evaluates per row gives the same counts.
        let units = FlopUnits::of(&model, &plan, &settings).unwrap();
        assert_eq!(units.at(r.batch, r.seq).unwrap(), f, "{}", r.id);
        let got = (f.forward, f.backward + f.recompute);
        let want = (r.forward_flops, r.backward_flops);
        if got != want {
            failures.push(format!(
                "{}: forward {} vs measured {} ({:+}), backward+recompute {} vs {} ({:+})",
                r.id,
                got.0,
                want.0,
                got.0 as i128 - want.0 as i128,
                got.1,
                want.1,
                got.1 as i128 - want.1 as i128
            ));
        }
        if !r.gradient_checkpointing {
            assert_eq!(f.recompute, 0, "{}", r.id);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} records differ:\n{}",
        failures.len(),
        fixture.records.len(),
        failures.join("\n")
    );
}

/// `FlopUnits` (the per-plan form a sweep evaluates per row) equals `step_flops` for every preset,
/// every registered regime with its default options (and LoRA-family regimes on named and group
/// targets), every attention implementation, with and without checkpointing and adapter dropout,
/// on workloads from 1 x 1 to long sequences.
#[test]
fn precomputed_flop_units_equal_the_walk_over_the_model() {
    let registry = ftbudget_roster::registry().unwrap();
    let mut specs: Vec<String> = registry.names().iter().map(|n| n.to_string()).collect();
    specs.extend(
        [
            "lora:r=16,targets=q_proj+v_proj",
            "lora:r=8,targets=mlp",
            "dora:r=4,targets=attn",
            "qlora:r=8",
        ]
        .map(String::from),
    );
    let workloads = [(1u64, 1u64), (3, 7), (1, 2048), (16, 512), (5, 4097)];
    let mut checked = 0;
    for name in ftbudget_models::presets::names() {
        let model = ftbudget_models::load(name).unwrap();
        for spec in &specs {
            let Ok(regime) = registry.build(spec) else {
                continue;
            };
            // A regime the model cannot take (no matching target) has no step to count.
            let Ok(plan) = regime.plan(&model) else {
                continue;
            };
            for attention in [
                AttentionImpl::Eager,
                AttentionImpl::Sdpa,
                AttentionImpl::Flash,
            ] {
                for checkpointing in [Checkpointing::None, Checkpointing::Full] {
                    for adapter_dropout in [false, true] {
                        let base = FlopSettings {
                            batch: 1,
                            seq: 1,
                            attention,
                            checkpointing,
                            adapter_dropout,
                            nf4_forward_counted: !adapter_dropout,
                        };
                        let units = FlopUnits::of(&model, &plan, &base).unwrap();
                        for (batch, seq) in workloads {
                            let settings = FlopSettings { batch, seq, ..base };
                            assert_eq!(
                                units.at(batch, seq).unwrap(),
                                step_flops(&model, &plan, &settings).unwrap(),
                                "{name} {spec} {attention:?} {checkpointing:?} dropout {adapter_dropout} at {batch} x {seq}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

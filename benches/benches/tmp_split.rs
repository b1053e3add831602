use criterion::{Criterion, criterion_group, criterion_main};
use ftbudget_benches::shape;
use ftbudget_core::{MemorySettings, TrainingPlan, estimate_memory};
use std::hint::black_box;

fn split(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let settings = MemorySettings::pytorch();
    let model = shape("llama-2-70b");
    for spec in ["lora:r=8", "full-ft"] {
        let regime = registry.build(spec).unwrap();
        let mut plan = TrainingPlan::default();
        c.bench_function(&format!("plan-only/{spec}"), |b| {
            b.iter(|| {
                regime.plan_into(black_box(&model), &mut plan).unwrap();
                plan.totals().trainable_params
            })
        });
        c.bench_function(&format!("estimate-only/{spec}"), |b| {
            b.iter(|| {
                let e = estimate_memory(&model, black_box(&plan), black_box(&settings));
                black_box(e.as_ref().unwrap());
            })
        });
    }
}
criterion_group!(benches, split);
criterion_main!(benches);

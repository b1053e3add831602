use criterion::{Criterion, criterion_group, criterion_main};

fn single_estimate(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let model = ftbudget_models::load("llama-2-7b").unwrap();
    let regime = registry.build("lora:r=8").unwrap();
    let settings = ftbudget_core::MemorySettings::seed();
    c.bench_function("estimate/llama-2-7b/lora-r8", |b| {
        b.iter(|| {
            let plan = regime.plan(std::hint::black_box(&model)).unwrap();
            ftbudget_core::estimate_memory(&model, &plan, &settings).unwrap()
        })
    });
}

criterion_group!(benches, single_estimate);
criterion_main!(benches);

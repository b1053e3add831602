//! Criterion benchmarks. Groups:
//! - `estimate/<model>`: one estimate (`plan_into` into a reused plan + `estimate_memory` under
//!   the PyTorch conventions) per regime, at MiniGPT, LLaMA-2-7B and LLaMA-2-70B shapes.
//! - `memory/<model>`: `estimate_memory` alone on a planned step (the memory model's share).
//! - `flops/<model>`: `step_flops` on a planned step, per regime (the FLOP columns' cost in
//!   `estimate`), and `flops-row/<model>`: `FlopUnits::at`, what a sweep row pays (its units
//!   are computed once per plan).
//! - `counts`: the answer peft's `get_nb_trainable_parameters()` gives (LLaMA-2-7B, LoRA r=8 on
//!   q_proj+v_proj), for the side-by-side with peft (`cargo xtask bench`).
//! - `sweep`: rank x width grids through `Grid::run` on all cores, and one core through
//!   `Grid::evaluate_range`; Throughput is the number of points, so reports read estimates/s.
//!
//! `cargo test --benches` runs each once as a smoke test (no timing).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ftbudget_benches::{MODELS, REGIMES, shape, spec};
use ftbudget_core::{MemorySettings, TrainingPlan, estimate_memory};
use ftbudget_sweep::{Grid, RegimePoint, ScaledShape, parse_values, spec_with_rank};
use std::hint::black_box;

/// The CLI's default conventions: one PyTorch step (amp-bf16, bf16 frozen base, AdamW).
fn pytorch_settings() -> MemorySettings {
    MemorySettings::pytorch()
}

fn single_estimate(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let settings = pytorch_settings();
    for &model_name in MODELS {
        let model = shape(model_name);
        let mut group = c.benchmark_group(format!("estimate/{model_name}"));
        group.throughput(Throughput::Elements(1));
        for &(id, spec) in REGIMES {
            let regime = registry.build(spec).unwrap();
            let mut plan = TrainingPlan::default();
            group.bench_with_input(BenchmarkId::from_parameter(id), &model, |b, model| {
                b.iter(|| {
                    regime.plan_into(black_box(model), &mut plan).unwrap();
                    let estimate = estimate_memory(model, &plan, black_box(&settings));
                    // The whole estimate is materialized; handing criterion a reference
                    // instead of the value spares a 150-byte copy that is not the tool's work.
                    black_box(estimate.as_ref().expect("estimate"));
                })
            });
        }
        group.finish();
    }
}

/// `estimate_memory` alone on a planned step: the memory model's share of `estimate/*` (a sweep
/// row or an API call re-estimating one plan under other settings pays only this).
fn memory_only(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let settings = pytorch_settings();
    for &model_name in MODELS {
        let model = shape(model_name);
        let mut group = c.benchmark_group(format!("memory/{model_name}"));
        group.throughput(Throughput::Elements(1));
        for &(id, spec) in REGIMES {
            let regime = registry.build(spec).unwrap();
            let plan = regime.plan(&model).unwrap();
            group.bench_with_input(BenchmarkId::from_parameter(id), &model, |b, model| {
                b.iter(|| {
                    let estimate = estimate_memory(model, black_box(&plan), black_box(&settings));
                    black_box(estimate.as_ref().expect("estimate"));
                })
            });
        }
        group.finish();
    }
}

/// `step_flops` alone on a planned step (what `estimate` and `sweep` add per row for the FLOP
/// columns).
fn step_flops_only(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let settings = ftbudget_core::FlopSettings::of(&pytorch_settings());
    for &model_name in MODELS {
        let model = shape(model_name);
        let mut group = c.benchmark_group(format!("flops/{model_name}"));
        group.throughput(Throughput::Elements(1));
        for &(id, spec) in REGIMES {
            let regime = registry.build(spec).unwrap();
            let plan = regime.plan(&model).unwrap();
            group.bench_with_input(BenchmarkId::from_parameter(id), &model, |b, model| {
                b.iter(|| ftbudget_core::step_flops(black_box(model), &plan, black_box(&settings)))
            });
        }
        group.finish();
    }
}

/// `FlopUnits::at` on a plan's precomputed units: a sweep row's FLOP columns.
fn flop_units_row(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let settings = ftbudget_core::FlopSettings::of(&pytorch_settings());
    for &model_name in MODELS {
        let model = shape(model_name);
        let mut group = c.benchmark_group(format!("flops-row/{model_name}"));
        group.throughput(Throughput::Elements(1));
        for &(id, spec) in REGIMES {
            let regime = registry.build(spec).unwrap();
            let plan = regime.plan(&model).unwrap();
            let units = ftbudget_core::FlopUnits::of(&model, &plan, &settings).unwrap();
            group.bench_with_input(BenchmarkId::from_parameter(id), &units, |b, units| {
                b.iter(|| black_box(units).at(black_box(settings.batch), black_box(settings.seq)))
            });
        }
        group.finish();
    }
}

fn peft_equivalent_counts(c: &mut Criterion) {
    let registry = ftbudget_roster::registry().unwrap();
    let model = shape("llama-2-7b");
    let regime = registry.build("lora:r=8,targets=q_proj+v_proj").unwrap();
    let mut plan = TrainingPlan::default();
    let mut group = c.benchmark_group("counts");
    group.throughput(Throughput::Elements(1));
    group.bench_function("llama-2-7b/lora-r8-qv", |b| {
        b.iter(|| {
            regime.plan_into(black_box(&model), &mut plan).unwrap();
            (plan.trainable_params().unwrap(), plan.all_params().unwrap())
        })
    });
    group.finish();
}

fn grid(model: &str, ranks: &str, widths: &str) -> Grid {
    let registry = ftbudget_roster::registry().unwrap();
    let base = spec(model);
    let shapes = parse_values("--widths", widths, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|w| ScaledShape::build(&base, w, base.layers).unwrap())
        .collect();
    let regimes = parse_values("--ranks", ranks, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| RegimePoint {
            rank: Some(r),
            regime: registry
                .build(&spec_with_rank("lora", "r", r).unwrap())
                .unwrap(),
        })
        .collect();
    Grid::new(shapes, regimes, vec![1], vec![2048], pytorch_settings()).unwrap()
}

fn sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("sweep");
    group.sample_size(10);
    for (name, g) in [
        (
            "llama-2-70b/1024-ranks-x-16-widths",
            grid("llama-2-70b", "1..1024:+1", "1024..16384:+1024"),
        ),
        (
            "minigpt/11-ranks-x-9-widths",
            grid("minigpt", "1,2,...,1024", "64..16384"),
        ),
    ] {
        let points = g.len();
        group.throughput(Throughput::Elements(points));
        group.bench_function(BenchmarkId::new("all-cores", name), |b| {
            b.iter(|| {
                let mut total = 0u64;
                g.run(
                    4096,
                    |_, rows| rows.iter().map(|r| r.estimate.memory.total).max(),
                    |m, _| {
                        total = total.max(m.unwrap_or(0));
                        Ok::<_, ftbudget_sweep::SweepError>(())
                    },
                )
                .unwrap();
                total
            })
        });
        let mut rows = Vec::with_capacity(points as usize);
        group.bench_function(BenchmarkId::new("one-core", name), |b| {
            b.iter(|| {
                g.evaluate_range(0, points, &mut rows).unwrap();
                rows.len()
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    single_estimate,
    memory_only,
    step_flops_only,
    flop_units_row,
    peft_equivalent_counts,
    sweep
);
criterion_main!(benches);

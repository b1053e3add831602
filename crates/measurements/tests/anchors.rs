//! Published memory anchors.

use ftbudget_core::{
    ActivationModel, ActivationSettings, MemorySettings, ModelShape, Optimizer, ParamOrigin,
    ParamSource, PlannedParams, Precision, Sharding, Storage, TrainingPlan, TransformerSpec,
};

/// One trainable tensor of `params` elements (standing for a whole model; activations are off).
fn dense_plan(model: &ModelShape, params: u64) -> TrainingPlan {
    let mut plan = TrainingPlan::default();
    plan.push_group(
        model,
        PlannedParams {
            source: ParamSource::Base { param: 0 },
            numel: params,
            count: 1,
            trainable: true,
            origin: ParamOrigin::Base,
            storage: Storage::Policy,
            matmul_weight: true,
        },
    );
    plan
}

fn mixed_adam(gpus: u64, zero_stage: u8) -> MemorySettings {
    MemorySettings {
        precision: Precision::SeedMixed,
        optimizer: Optimizer::AdamW,
        step_counters: false,
        activations: ActivationSettings {
            model: ActivationModel::None,
            ..ActivationSettings::seed()
        },
        sharding: Sharding { gpus, zero_stage },
        ..MemorySettings::seed()
    }
}

/// Rajbhandari et al. 2020 (ZeRO), figure 1: a 7.5B model with Adam in mixed precision on 64
/// GPUs needs 120, 31.4, 16.6 and 1.9 GB per GPU at stages 0 to 3.
#[test]
fn zero_paper_7_5b_on_64_gpus() {
    let model = TransformerSpec::minigpt().build().unwrap();
    let plan = dense_plan(&model, 7_500_000_000);
    for (stage, gb) in [(0u8, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)] {
        let e = ftbudget_core::estimate_memory(&model, &plan, &mixed_adam(64, stage)).unwrap();
        let got = e.total as f64 / 1e9;
        assert!(
            (got - gb).abs() < 0.05,
            "stage {stage}: {got} GB, paper {gb}"
        );
        assert_eq!(e.gpus, 64);
        assert_eq!(e.total_all_gpus, e.total * 64);
    }
}

/// Mixed-precision Adam holds 16 bytes per trainable parameter: fp16 weights and gradients, fp32
/// master, momentum and variance (ZeRO section 3.1).
#[test]
fn mixed_precision_adam_is_16_bytes_per_param() {
    let model = TransformerSpec::minigpt().build().unwrap();
    let n = 1_234_567;
    let e =
        ftbudget_core::estimate_memory(&model, &dense_plan(&model, n), &mixed_adam(1, 0)).unwrap();
    assert_eq!(e.total, 16 * n);
    assert_eq!(e.weights, 6 * n);
    assert_eq!(e.gradients, 2 * n);
    assert_eq!(e.optimizer, 8 * n);
}

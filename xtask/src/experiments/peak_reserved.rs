//! Experiment 33's output side: the step timeline chart of the published model (the issue asks
//! for Llama-3-8B LoRA at seq 2048) and, per regime, the reserved estimate (what `nvidia-smi`
//! would show: `ftbudget_core::memory::reserved`) beside the peak, with the smallest GPU preset
//! each fits on with `fit`'s margin and without. Kept apart from `peak_memory.rs` (the
//! measurements) so that each side grows on its own.

use super::{Experiment, OutputFile};
use anyhow::Result;
use ftbudget_core::memory::reserved::{peak_budget, reserved};
use ftbudget_core::{CudaOverhead, FitMargin, MemorySettings, ModelShape, estimate_memory};
use ftbudget_report::timeline::{step_timelines, timeline_png};
use ftbudget_report::units;
use ftbudget_sweep::GPU_PRESETS;
use serde::Deserialize;
use std::fmt::Write as _;

/// `[timeline]`: the chart of the step's live memory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineKeys {
    pub file: String,
    pub title: String,
    /// The regimes drawn, one panel each.
    pub regimes: Vec<String>,
}

/// `[reserved]`: the overhead model's settings, as `--cuda-context` and `--margin` take them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedKeys {
    pub cuda_context: String,
    pub margin: String,
}

/// The timeline chart of `keys.regimes` on `model` under `settings`.
pub fn timeline_chart(
    exp: &Experiment,
    model: &ModelShape,
    settings: &MemorySettings,
    keys: &TimelineKeys,
) -> Result<OutputFile> {
    let registry = ftbudget_roster::registry()?;
    let regimes = keys
        .regimes
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            registry
                .build(spec)
                .map_err(|e| exp.key_error(&format!("timeline.regimes[{i}]"), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let timelines =
        step_timelines(model, &regimes, settings).map_err(|e| exp.key_error("timeline", e))?;
    let png = timeline_png(&keys.title, &timelines).map_err(|e| exp.key_error("timeline", e))?;
    Ok(OutputFile {
        name: keys.file.clone(),
        bytes: png,
    })
}

/// The smallest GPU preset on which `fits(capacity)` holds.
fn smallest_gpu(fits: impl Fn(u64) -> bool) -> String {
    let mut presets = GPU_PRESETS.to_vec();
    presets.sort_by_key(|g| g.bytes());
    presets
        .iter()
        .find(|g| fits(g.bytes()))
        .map_or_else(|| "none".to_string(), |g| g.name.to_string())
}

/// The reserved table and its prose, per regime of `specs`.
pub fn reserved_section(
    exp: &Experiment,
    model: &ModelShape,
    settings: &MemorySettings,
    specs: &[String],
    keys: &ReservedKeys,
) -> Result<(String, String)> {
    let overhead: CudaOverhead = keys
        .cuda_context
        .parse()
        .map_err(|e| exp.key_error("reserved.cuda_context", e))?;
    let margin: FitMargin = keys
        .margin
        .parse()
        .map_err(|e| exp.key_error("reserved.margin", e))?;
    let registry = ftbudget_roster::registry()?;
    let mut table = format!(
        "| Regime | Peak | Reserved (est.) | CUDA context | Segment rounding | Smallest GPU: peak | Smallest GPU: reserved + {margin} |\n|---|---:|---:|---:|---:|---|---|\n"
    );
    let mut prose = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let key = format!("regimes[{i}]");
        let regime = registry.build(spec).map_err(|e| exp.key_error(&key, e))?;
        let plan = regime.plan(model).map_err(|e| exp.key_error(&key, e))?;
        let peak = estimate_memory(model, &plan, settings)
            .map_err(|e| exp.key_error(&key, e))?
            .peak;
        let r = reserved(&peak, &overhead).map_err(|e| exp.key_error(&key, e))?;
        let on_peak = smallest_gpu(|capacity| peak.bytes <= capacity);
        let on_reserved = smallest_gpu(|capacity| {
            peak.bytes <= peak_budget(capacity, margin.bytes_of(capacity), &overhead)
        });
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {on_peak} | {on_reserved} |",
            regime.label(),
            units::binary(peak.bytes),
            units::binary(r.bytes),
            units::binary(r.context_bytes),
            units::binary(r.allocator_rounding_bytes),
        );
        let share = 100.0 * r.context_bytes as f64 / r.bytes as f64;
        let verdict = if on_peak == "none" {
            "no preset GPU holds even the peak".to_string()
        } else if on_peak == on_reserved {
            format!("the smallest preset GPU is {on_peak} either way")
        } else {
            format!(
                "the peak alone would fit on {on_peak}, the reserved estimate with the margin needs {on_reserved}"
            )
        };
        prose.push(format!(
            "- {}: nvidia-smi would show about {} at the peak, {share:.1}% of it the CUDA context; {verdict}.",
            regime.label(),
            units::binary(r.bytes),
        ));
    }
    let statement = format!(
        "The model (`{}`): {}.",
        keys.cuda_context,
        ftbudget_core::memory::reserved::model_statement(&overhead)
    );
    Ok((table, format!("{}\n\n{statement}", prose.join("\n"))))
}

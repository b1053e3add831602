//! The step timeline as a chart (`ftbudget estimate --timeline out.png`, experiment 33): for
//! each regime, live memory at every moment of [`ftbudget_core::memory::peak::timeline`] for the
//! first and a steady-state step, stacked by `MemTracker`'s categories, the peak marked. The bars
//! are the timeline's moments themselves, converted to the axis unit only for drawing.

use crate::ReportError;
use crate::chart::{Segment, Size, TimelineChart, TimelinePanel, timeline_chart};
use crate::units;
use ftbudget_core::memory::peak::{MOMENTS, Moment, timeline};
use ftbudget_core::memory::timeline_inputs;
use ftbudget_core::{
    MemorySettings, ModelShape, PeakEstimate, Regime, StepKind, memory::LiveBytes,
};

/// The categories stacked, bottom to top, as `MemTracker` names them.
pub const CATEGORIES: [&str; 6] = [
    "Parameters",
    "Gradients",
    "Optimizer state",
    "Activations",
    "Temporaries",
    "Input ids",
];

/// The bytes of each of [`CATEGORIES`] in `live`.
pub fn category_bytes(live: &LiveBytes) -> [u64; 6] {
    [
        live.parameters,
        live.gradients,
        live.optimizer,
        live.activations,
        live.temporaries,
        live.inputs,
    ]
}

/// One regime's two steps and its peak.
#[derive(Debug, Clone, PartialEq)]
pub struct RegimeTimeline {
    pub label: String,
    pub first: [Moment; MOMENTS],
    pub steady: [Moment; MOMENTS],
    pub peak: PeakEstimate,
}

impl RegimeTimeline {
    /// The moments drawn, in order: the first step's, then the steady step's.
    pub fn moments(&self) -> impl Iterator<Item = &Moment> {
        self.first.iter().chain(&self.steady)
    }

    /// Index (in [`Self::moments`]) of the peak: the earliest moment of the peak's step that
    /// holds the peak's bytes.
    pub fn peak_index(&self) -> usize {
        let (offset, moments) = match self.peak.step {
            StepKind::First => (0, &self.first),
            StepKind::Steady => (MOMENTS, &self.steady),
        };
        offset
            + moments
                .iter()
                .position(|m| m.live.total() == self.peak.bytes)
                .unwrap_or(0)
    }
}

/// The timeline of every regime of `regimes` on `model` under `settings`.
pub fn step_timelines(
    model: &ModelShape,
    regimes: &[Box<dyn Regime>],
    settings: &MemorySettings,
) -> Result<Vec<RegimeTimeline>, ReportError> {
    regimes
        .iter()
        .map(|regime| {
            let plan = regime.plan(model)?;
            let inputs = timeline_inputs(model, &plan, settings)?;
            Ok(RegimeTimeline {
                label: regime.label(),
                first: timeline(&inputs, StepKind::First),
                steady: timeline(&inputs, StepKind::Steady),
                peak: ftbudget_core::memory::peak::peak(&inputs),
            })
        })
        .collect()
}

/// A moment's label under its bar.
fn short_label(label: &str) -> &str {
    match label {
        "forward end" => "fwd end",
        "backward start" => "bwd start",
        "recompute last block" => "recompute",
        "backward end" => "bwd end",
        "optimizer step" => "optim",
        other => other,
    }
}

/// The labels under the bars; a recompute moment that only repeats the backward's start (no
/// checkpointing) says so.
fn moment_labels(t: &RegimeTimeline) -> Vec<String> {
    let moments: Vec<&Moment> = t.moments().collect();
    moments
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let repeats =
                i > 0 && m.label == "recompute last block" && moments[i - 1].live == m.live;
            if repeats {
                "(no recompute)"
            } else {
                short_label(m.label)
            }
            .to_string()
        })
        .collect()
}

/// The chart of `timelines`, titled with `title`; the axis in GiB when a moment reaches 1 GiB,
/// else MiB.
pub fn timeline_spec(title: &str, timelines: &[RegimeTimeline]) -> TimelineChart {
    let largest = timelines
        .iter()
        .flat_map(|t| t.moments().map(|m| m.live.total()))
        .max()
        .unwrap_or(0);
    let (unit, scale) = if largest >= 1 << 30 {
        ("GiB", (1u64 << 30) as f64)
    } else {
        ("MiB", (1u64 << 20) as f64)
    };
    let panels = timelines
        .iter()
        .map(|t| {
            let categories = CATEGORIES
                .iter()
                .enumerate()
                .map(|(k, name)| Segment {
                    name: name.to_string(),
                    values: t
                        .moments()
                        .map(|m| category_bytes(&m.live)[k] as f64 / scale)
                        .collect(),
                })
                .collect();
            TimelinePanel {
                title: format!(
                    "{}: peak {} ({} step, {})",
                    t.label,
                    units::binary(t.peak.bytes),
                    t.peak.step.name(),
                    t.peak.phase
                ),
                moments: moment_labels(t),
                groups: vec![(0, "first step".into()), (MOMENTS, "steady step".into())],
                categories,
                peak: (
                    t.peak_index(),
                    format!("peak {}", units::binary(t.peak.bytes)),
                ),
            }
        })
        .collect::<Vec<_>>();
    TimelineChart {
        title: title.to_string(),
        y_label: format!("Live memory ({unit})"),
        size: Size {
            width: 1400,
            height: TimelineChart::height_for(panels.len()),
        },
        panels,
    }
}

/// The PNG of [`timeline_spec`].
pub fn timeline_png(title: &str, timelines: &[RegimeTimeline]) -> Result<Vec<u8>, ReportError> {
    Ok(timeline_chart(&timeline_spec(title, timelines))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftbudget_core::LossKind;
    use ftbudget_core::memory::peak::{StepInputs, peak};

    /// A LoRA-like step in MiB: 1 GiB of parameters, small gradients and state, 2 GiB saved,
    /// logits of 64 Mi elements in bf16.
    fn inputs() -> StepInputs {
        const MIB: u64 = 1 << 20;
        StepInputs {
            parameters: 1024 * MIB,
            gradients: 16 * MIB,
            optimizer_state: 32 * MIB,
            optimizer_temporaries: 16 * MIB,
            activations_at_backward_start: 2048 * MIB,
            logits: 64 * MIB,
            logit_bytes: 2,
            loss_saved: 256 * MIB + 8 * 1024 + 4,
            inputs: 8 * 1024,
            grad_accum: 1,
            loss: LossKind::Full,
            ..StepInputs::default()
        }
    }

    fn lora_timeline() -> RegimeTimeline {
        let s = inputs();
        RegimeTimeline {
            label: "LoRA r=8".into(),
            first: timeline(&s, StepKind::First),
            steady: timeline(&s, StepKind::Steady),
            peak: peak(&s),
        }
    }

    /// The bars are the timeline's moments: each category's value times the unit is the
    /// moment's bytes, first step then steady step; the peak marks the steady step's backward
    /// start: parameters 1024 + state 32 + saved 2048 (the loss's 256 inside) + 8 x 64 MiB of
    /// fp32 logit gradients, + 8 KiB of input ids.
    #[test]
    fn bars_are_the_timeline_moments() {
        let t = lora_timeline();
        let spec = timeline_spec("Step", std::slice::from_ref(&t));
        assert_eq!(spec.y_label, "Live memory (GiB)");
        let panel = &spec.panels[0];
        assert_eq!(panel.moments.len(), 14);
        let gib = (1u64 << 30) as f64;
        for (i, m) in t.moments().enumerate() {
            for (k, bytes) in category_bytes(&m.live).into_iter().enumerate() {
                assert_eq!(panel.categories[k].values[i] * gib, bytes as f64, "{i} {k}");
            }
        }
        assert_eq!(panel.peak.0, 7 + 2);
        assert_eq!(
            t.peak.bytes,
            (1024 + 32 + 2048 + 512) * (1 << 20) + 8 * 1024
        );
        assert_eq!(panel.moments[2], "bwd start");
    }

    /// A PNG of the expected size, with the categories' colours and the red peak outline.
    #[test]
    fn timeline_png_draws_every_category() {
        let png_bytes = timeline_png("Step", &[lora_timeline(), lora_timeline()]).unwrap();
        let decoder = png::Decoder::new(png_bytes.as_slice());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width, info.height),
            (1400, TimelineChart::height_for(2))
        );
        let count = |c: plotters::style::RGBColor| {
            buf.chunks_exact(3)
                .filter(|p| p == &[c.0, c.1, c.2])
                .count()
        };
        let palette = crate::chart::PALETTE;
        // Parameters, optimizer state and activations fill real area; the peak is outlined.
        assert!(count(palette[0]) > 5_000);
        assert!(count(palette[2]) > 100);
        assert!(count(palette[3]) > 5_000);
        assert!(count(plotters::style::RGBColor(180, 30, 30)) > 200);
        let dark = buf
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 60))
            .count();
        assert!(dark > 2_000, "text drawn: {dark}");
    }

    #[test]
    fn no_regime_is_refused() {
        let err = timeline_png("Step", &[]).unwrap_err().to_string();
        assert_eq!(err, "chart `Step`: no panels");
    }
}

//! Assertions shared by the measured-record tests.

// Each test crate uses its own part of these helpers.
#![allow(dead_code)]

use ftbudget_core::MemoryEstimate;
use ftbudget_core::memory::StepPeak;
use ftbudget_measurements::MemoryRecord;
use ftbudget_measurements::peak::{PeakPrediction, PeakRecord, StepRecord, category_misses};
use std::collections::BTreeMap;

/// Weights, gradients, optimizer moments and step counters match the record exactly.
pub fn assert_state_buckets_exact(r: &MemoryRecord, e: &MemoryEstimate) {
    assert_eq!(e.weights, r.params.total_bytes, "{} weights", r.id);
    assert_eq!(e.gradients, r.grads.bytes, "{} gradients", r.id);
    assert_eq!(
        e.detail.optimizer_states, r.optimizer.state_bytes_excl_step,
        "{} optimizer states",
        r.id
    );
    assert_eq!(
        e.detail.step_counters, r.optimizer.step_bytes,
        "{} steps",
        r.id
    );
}

/// `full`, `lora` or `dora`.
pub fn regime_kind(r: &MemoryRecord) -> &str {
    r.regime.split('-').next().unwrap_or("")
}

/// `fp32` or `autocast`.
pub fn precision(r: &MemoryRecord) -> &str {
    if r.dtype_mode == "fp32" {
        "fp32"
    } else {
        "autocast"
    }
}

pub fn checkpointing(r: &MemoryRecord) -> &str {
    if r.gradient_checkpointing {
        "ckpt"
    } else {
        "no-ckpt"
    }
}

pub fn dropout(r: &MemoryRecord) -> &str {
    if r.dropout > 0.0 {
        "dropout"
    } else {
        "no-dropout"
    }
}

/// `(predicted - measured) / measured`; 0 when both are 0.
pub fn relative_error(predicted: u64, measured: u64) -> f64 {
    if predicted == measured {
        0.0
    } else {
        (predicted as f64 - measured as f64) / measured as f64
    }
}

/// One group of records: the worst relative error observed in it, recorded in percent (signed,
/// two decimals), and the bound no record of the group may exceed (percent, either sign), set
/// just above the worst.
pub struct Bound {
    pub group: &'static str,
    pub worst_percent: f64,
    pub tolerance_percent: f64,
}

/// A table row: `bound(group, worst_percent, tolerance_percent)`.
pub const fn bound(group: &'static str, worst_percent: f64, tolerance_percent: f64) -> Bound {
    Bound {
        group,
        worst_percent,
        tolerance_percent,
    }
}

/// The error of largest magnitude in each group, signed, with its record.
#[derive(Default)]
pub struct Worst {
    groups: BTreeMap<String, (f64, String, usize)>,
}

impl Worst {
    pub fn add(&mut self, group: String, error: f64, id: &str) {
        let slot = self.groups.entry(group).or_insert((0.0, String::new(), 0));
        if error.abs() > slot.0.abs() || slot.2 == 0 {
            *slot = (error, id.to_string(), slot.2);
        }
        slot.2 += 1;
    }

    /// Every group has a row of `table` and every row a group; no group's worst error exceeds
    /// its tolerance; each row's recorded worst is the observed one (so the table stays a true
    /// record: an improvement updates it, a regression past the tolerance fails). On failure
    /// the message lists the table as observed.
    pub fn check(&self, what: &str, table: &[Bound]) {
        let mut failures = Vec::new();
        for b in table {
            if !self.groups.contains_key(b.group) {
                failures.push(format!("{what} `{}`: no record in this group", b.group));
            }
        }
        for (group, (worst, id, _)) in &self.groups {
            let percent = 100.0 * worst;
            match table.iter().find(|b| b.group == group) {
                None => failures.push(format!("{what} `{group}`: no bound ({percent:+.2}%)")),
                Some(b) => {
                    if percent.abs() > b.tolerance_percent {
                        failures.push(format!(
                            "{what} `{group}`: {percent:+.2}% on {id}, beyond ±{}%",
                            b.tolerance_percent
                        ));
                    }
                    if (percent - b.worst_percent).abs() > 0.005 {
                        failures.push(format!(
                            "{what} `{group}`: worst is now {percent:+.2}% ({id}), recorded {:+.2}%",
                            b.worst_percent
                        ));
                    }
                }
            }
        }
        if !failures.is_empty() {
            let observed: Vec<String> = self
                .groups
                .iter()
                .map(|(group, (worst, id, n))| {
                    format!("{group}: {:+.2}% over {n} records ({id})", 100.0 * worst)
                })
                .collect();
            panic!("{failures:#?}\nobserved:\n{}", observed.join("\n"));
        }
    }
}

/// A record's two measured steps beside ftbudget's peaks of the first and a steady step, named
/// as failure messages name them.
pub fn paired_steps<'a>(
    r: &'a PeakRecord,
    e: &PeakPrediction,
) -> [(&'static str, &'a StepRecord, StepPeak); 2] {
    [
        ("step 1", &r.peak.step1, e.first),
        ("step 2", &r.peak.step2, e.steady),
    ]
}

/// Predicted step peaks held to their MemTracker records, step by step: how many are within 5%,
/// which are beyond 10%, and (where the phases and categories are checked) the steps peaking in
/// another phase and the categories beyond 10% of the measured ones where those hold more than
/// 5% of the peak.
#[derive(Default)]
pub struct StepTally {
    pub steps: usize,
    pub within_5: usize,
    pub beyond_10: Vec<String>,
    pub phase_misses: Vec<String>,
    pub category_misses: Vec<String>,
}

impl StepTally {
    /// Add step `step` (`step 1`, `step 2`) of record `id`, checking its phase and categories
    /// when `phase_and_categories`; returns the peak's relative error.
    pub fn add(
        &mut self,
        id: &str,
        step: &str,
        predicted: &StepPeak,
        measured: &StepRecord,
        phase_and_categories: bool,
    ) -> f64 {
        let error = relative_error(predicted.bytes, measured.peak_bytes);
        self.steps += 1;
        if error.abs() <= 0.05 {
            self.within_5 += 1;
        }
        if error.abs() > 0.10 {
            self.beyond_10
                .push(format!("{id} {step}: {:+.2}%", 100.0 * error));
        }
        if !phase_and_categories {
            return error;
        }
        if predicted.phase.name() != measured.phase {
            self.phase_misses.push(format!(
                "{id} {step}: predicted {}, measured {}",
                predicted.phase, measured.phase
            ));
        }
        for (cat, p, mb) in category_misses(&predicted.by_category, measured) {
            self.category_misses
                .push(format!("{id} {step} {cat}: predicted {p}, measured {mb}"));
        }
        error
    }

    /// No step beyond 10%, exactly `within_5` = (steps within 5%, steps) and exactly the
    /// `known` category misses.
    pub fn assert_holds(&self, within_5: (usize, usize), known: &[&str]) {
        assert!(
            self.beyond_10.is_empty(),
            "beyond 10%: {:#?}",
            self.beyond_10
        );
        assert_eq!((self.within_5, self.steps), within_5, "steps within 5%");
        assert_eq!(
            self.category_misses, known,
            "categories beyond 10% of the measured"
        );
    }
}

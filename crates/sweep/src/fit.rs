//! "Will it fit?": for one regime on one model and GPU, whether the workload fits, and the largest
//! batch, sequence length and LoRA rank that fit, each with the others held at the workload.
//! "Fits" means the step's peak (the most bytes alive at one moment, `MemoryEstimate::peak`) is
//! at most the GPU's capacity: the bucket total can be below the peak (the loss's fp32 logits and
//! their gradients, the optimizer's temporaries live only for a moment).
//!
//! Per-GPU memory is non-decreasing in batch, sequence length and rank (every term is a sum of
//! non-negative products of them, and the peak is the largest of such sums), so each answer is
//! found exactly by exponential search (1, 2, 4, ...) followed by bisection: about `2 log2(answer)` estimates, never a linear scan. One
//! exception is documented on [`FitQuery::answer`]: 8-bit AdamW keeps 32-bit state for tensors
//! under 4,096 elements, so on tiny models memory can drop when a higher rank crosses that size.

use crate::error::SweepError;
use ftbudget_core::{
    MemoryEstimate, MemorySettings, ModelShape, Regime, TrainingPlan, Workload, estimate_memory,
};
use serde::Serialize;

/// The largest `x` in `1..=max` with `fits(x)`, or `None` when even 1 does not fit. `fits` must
/// be monotone (true then false).
pub fn largest_fitting<E>(
    max: u64,
    mut fits: impl FnMut(u64) -> Result<bool, E>,
) -> Result<Option<u64>, E> {
    if max == 0 || !fits(1)? {
        return Ok(None);
    }
    // Exponential search: lo fits, hi does not (or hi = max + 1).
    let mut lo = 1u64;
    let mut hi = loop {
        let next = lo.saturating_mul(2);
        if next > max {
            if fits(max)? {
                return Ok(Some(max));
            }
            break max;
        }
        if !fits(next)? {
            break next;
        }
        lo = next;
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

/// The largest value of one knob that fits, and the memory at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub value: u64,
    /// Per-GPU bucket total at `value`.
    pub total_bytes: u64,
    /// Per-GPU peak at `value` (what is compared with the capacity).
    pub peak_bytes: u64,
    /// Capacity minus `peak_bytes`.
    pub headroom_bytes: u64,
    /// `value` is the search bound: larger values may fit too.
    pub capped: bool,
}

/// One regime's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitAnswer {
    pub regime: String,
    pub label: String,
    pub workload: Workload,
    /// Per-GPU bucket total at the workload.
    pub total_bytes: u64,
    /// Per-GPU peak of the step at the workload, where it happens (`forward`, `loss`, `backward`,
    /// `optimizer`) and in which step (`first`, `steady`).
    pub peak_bytes: u64,
    pub peak_phase: &'static str,
    pub peak_step: &'static str,
    pub capacity_bytes: u64,
    /// `peak_bytes <= capacity_bytes`.
    pub fits: bool,
    /// Capacity minus the peak; negative when it does not fit.
    pub headroom_bytes: i128,
    /// The largest micro-batch at the workload's sequence length (`None`: not even 1 fits).
    pub max_batch: Option<Limit>,
    /// The largest sequence length at the workload's batch.
    pub max_seq: Option<Limit>,
    /// Whether the regime has a rank to search.
    pub has_rank: bool,
    /// The largest rank at the workload (`None` with `has_rank`: not even rank 1 fits).
    pub max_rank: Option<Limit>,
}

/// How to rebuild a regime at another rank, and the largest rank to try.
pub struct RankSearch<'a> {
    pub max: u64,
    pub build: &'a (dyn Fn(u64) -> Result<Box<dyn Regime>, SweepError> + Sync),
}

/// A model, memory settings (the workload included) and a GPU size.
pub struct FitQuery<'a> {
    pub model: &'a ModelShape,
    pub settings: MemorySettings,
    /// Bytes per GPU.
    pub capacity: u64,
    pub max_batch: u64,
    pub max_seq: u64,
}

impl FitQuery<'_> {
    fn memory(
        &self,
        regime: &dyn Regime,
        workload: Workload,
        plan: &mut TrainingPlan,
    ) -> Result<MemoryEstimate, SweepError> {
        let mut settings = self.settings.clone();
        settings.workload = workload;
        // Memory only: a probe needs no FLOPs (the answer's time is counted once, afterwards).
        regime.plan_into(self.model, plan)?;
        Ok(estimate_memory(self.model, plan, &settings)?)
    }

    fn limit(
        &self,
        max: u64,
        mut memory_at: impl FnMut(u64) -> Result<MemoryEstimate, SweepError>,
    ) -> Result<Option<Limit>, SweepError> {
        let capacity = self.capacity;
        let value = largest_fitting(max, |x| {
            Ok::<_, SweepError>(memory_at(x)?.peak.bytes <= capacity)
        })?;
        value
            .map(|value| {
                let memory = memory_at(value)?;
                Ok(Limit {
                    value,
                    total_bytes: memory.total,
                    peak_bytes: memory.peak.bytes,
                    headroom_bytes: capacity - memory.peak.bytes,
                    capped: value == max,
                })
            })
            .transpose()
    }

    /// Answer for `regime`; `rank` (for LoRA-family regimes) also searches the largest rank.
    /// Under `adamw-8bit` the rank answer assumes monotone memory, which holds once every adapter
    /// tensor has at least 4,096 elements (any rank on models with `hidden >= 4096`).
    pub fn answer(
        &self,
        regime: &dyn Regime,
        rank: Option<RankSearch<'_>>,
    ) -> Result<FitAnswer, SweepError> {
        let mut plan = TrainingPlan::default();
        let w = self.settings.workload;
        let memory = self.memory(regime, w, &mut plan)?;
        let max_batch = self.limit(self.max_batch, |batch| {
            self.memory(regime, Workload { batch, seq: w.seq }, &mut plan)
        })?;
        let max_seq = self.limit(self.max_seq, |seq| {
            self.memory(
                regime,
                Workload {
                    batch: w.batch,
                    seq,
                },
                &mut plan,
            )
        })?;
        let has_rank = rank.is_some();
        let max_rank = match rank {
            None => None,
            Some(search) => self.limit(search.max, |r| {
                let at_rank = (search.build)(r)?;
                self.memory(at_rank.as_ref(), w, &mut plan)
            })?,
        };
        Ok(FitAnswer {
            regime: regime.spec(),
            label: regime.label(),
            workload: w,
            total_bytes: memory.total,
            peak_bytes: memory.peak.bytes,
            peak_phase: memory.peak.phase.name(),
            peak_step: memory.peak.step.name(),
            capacity_bytes: self.capacity,
            fits: memory.peak.bytes <= self.capacity,
            headroom_bytes: i128::from(self.capacity) - i128::from(memory.peak.bytes),
            max_batch,
            max_seq,
            has_rank,
            max_rank,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_fitting_solves_exactly() {
        for answer in [1u64, 2, 3, 7, 8, 9, 1000, 65_535, 65_536, 1 << 40] {
            let mut calls = 0;
            let got = largest_fitting(u64::MAX / 2, |x| {
                calls += 1;
                Ok::<_, ()>(x <= answer)
            })
            .unwrap();
            assert_eq!(got, Some(answer));
            // Exponential + bisection: at most about 2 log2(answer) + 3 probes.
            assert!(
                calls <= 2 * (64 - answer.leading_zeros()) + 3,
                "{answer}: {calls}"
            );
        }
        assert_eq!(largest_fitting(100, |_| Ok::<_, ()>(false)).unwrap(), None);
        assert_eq!(
            largest_fitting(100, |_| Ok::<_, ()>(true)).unwrap(),
            Some(100)
        );
        assert_eq!(
            largest_fitting(100, |x| Ok::<_, ()>(x <= 99)).unwrap(),
            Some(99)
        );
        assert_eq!(largest_fitting(1, |_| Ok::<_, ()>(true)).unwrap(), Some(1));
        assert_eq!(largest_fitting(0, |_| Ok::<_, ()>(true)).unwrap(), None);
    }
}

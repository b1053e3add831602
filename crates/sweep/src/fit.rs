//! "Will it fit?": for one regime on one model and GPU, whether the workload fits, and the largest
//! batch, sequence length and LoRA rank that fit, each with the others held at the workload.
//!
//! Per-GPU memory is non-decreasing in batch, sequence length and rank (every term is a sum of
//! non-negative products of them), so each answer is found exactly by exponential search (1, 2,
//! 4, ...) followed by bisection: about `2 log2(answer)` estimates, never a linear scan. One
//! exception is documented on [`FitQuery::answer`]: 8-bit AdamW keeps 32-bit state for tensors
//! under 4,096 elements, so on tiny models memory can drop when a higher rank crosses that size.

use crate::error::SweepError;
use crate::point::evaluate;
use ftbudget_core::{MemorySettings, ModelShape, Regime, TrainingPlan, Workload};
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
    /// Per-GPU bytes at `value`.
    pub total_bytes: u64,
    /// Capacity minus `total_bytes`.
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
    /// Per-GPU bytes at the workload.
    pub total_bytes: u64,
    pub capacity_bytes: u64,
    pub fits: bool,
    /// Capacity minus total; negative when it does not fit.
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
    fn total(
        &self,
        regime: &dyn Regime,
        workload: Workload,
        plan: &mut TrainingPlan,
    ) -> Result<u64, SweepError> {
        let mut settings = self.settings.clone();
        settings.workload = workload;
        Ok(evaluate(self.model, regime, &settings, plan)?.memory.total)
    }

    fn limit(
        &self,
        max: u64,
        mut total_at: impl FnMut(u64) -> Result<u64, SweepError>,
    ) -> Result<Option<Limit>, SweepError> {
        let capacity = self.capacity;
        let value = largest_fitting(max, |x| Ok::<_, SweepError>(total_at(x)? <= capacity))?;
        value
            .map(|value| {
                let total = total_at(value)?;
                Ok(Limit {
                    value,
                    total_bytes: total,
                    headroom_bytes: capacity - total,
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
        let total = self.total(regime, w, &mut plan)?;
        let max_batch = self.limit(self.max_batch, |batch| {
            self.total(regime, Workload { batch, seq: w.seq }, &mut plan)
        })?;
        let max_seq = self.limit(self.max_seq, |seq| {
            self.total(
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
                self.total(at_rank.as_ref(), w, &mut plan)
            })?,
        };
        Ok(FitAnswer {
            regime: regime.spec(),
            label: regime.label(),
            workload: w,
            total_bytes: total,
            capacity_bytes: self.capacity,
            fits: total <= self.capacity,
            headroom_bytes: i128::from(self.capacity) - i128::from(total),
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

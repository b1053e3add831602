//! The sweep grid: shapes (width x layers) x regimes (one per rank) x batch x seq, evaluated on
//! every core in index order.
//!
//! Point `i` decodes as `shape`-major, then regime, batch, seq (seq varies fastest), so rows for
//! one shape and rank are adjacent and a worker re-plans only when the shape or rank changes.
//! Work is cut into chunks of consecutive points; a wave of chunks is evaluated in parallel with
//! rayon and handed back in order, so output is deterministic whatever the thread count.

use crate::error::SweepError;
use crate::point::{PointEstimate, evaluate_with_flops};
use crate::scale::ScaledShape;
use ftbudget_core::{FlopSettings, FlopUnits, MemorySettings, Regime, TrainingPlan, Workload};
use rayon::prelude::*;

/// The most points one sweep may have: a billion estimates take minutes, more is a typo.
pub const MAX_POINTS: u64 = 1_000_000_000;
/// The most (width, layers) shapes one sweep may build up front.
pub const MAX_SHAPES: u64 = 1 << 16;

/// One model shape of the grid.
pub type ShapePoint = ScaledShape;

/// One regime of the grid; `rank` is the swept LoRA rank, `None` for regimes without one.
pub struct RegimePoint {
    pub rank: Option<u64>,
    pub regime: Box<dyn Regime>,
}

/// One evaluated point; `shape` and `regime` index [`Grid::shapes`] and [`Grid::regimes`].
#[derive(Debug, Clone)]
pub struct Row {
    pub index: u64,
    pub shape: usize,
    pub regime: usize,
    pub batch: u64,
    pub seq: u64,
    pub estimate: PointEstimate,
}

pub struct Grid {
    pub shapes: Vec<ShapePoint>,
    pub regimes: Vec<RegimePoint>,
    pub batches: Vec<u64>,
    pub seqs: Vec<u64>,
    /// Everything but the workload, which each point sets.
    pub settings: MemorySettings,
}

/// The product of axis lengths, checked against [`MAX_POINTS`].
pub fn checked_points(lengths: &[u64]) -> Result<u64, SweepError> {
    let points: u128 = lengths.iter().map(|&n| u128::from(n)).product();
    if points > u128::from(MAX_POINTS) {
        return Err(SweepError::TooLarge {
            points,
            limit: MAX_POINTS,
        });
    }
    Ok(points as u64)
}

impl Grid {
    /// Check the axes: none empty, the product at most [`MAX_POINTS`].
    pub fn new(
        shapes: Vec<ShapePoint>,
        regimes: Vec<RegimePoint>,
        batches: Vec<u64>,
        seqs: Vec<u64>,
        settings: MemorySettings,
    ) -> Result<Self, SweepError> {
        for (flag, n) in [
            ("--widths", shapes.len()),
            ("--ranks", regimes.len()),
            ("--batch", batches.len()),
            ("--seq", seqs.len()),
        ] {
            if n == 0 {
                return Err(SweepError::Range {
                    flag,
                    reason: "the list is empty".into(),
                });
            }
        }
        checked_points(&[
            shapes.len() as u64,
            regimes.len() as u64,
            batches.len() as u64,
            seqs.len() as u64,
        ])?;
        Ok(Grid {
            shapes,
            regimes,
            batches,
            seqs,
            settings,
        })
    }

    /// The number of points.
    pub fn len(&self) -> u64 {
        (self.shapes.len() * self.regimes.len() * self.batches.len() * self.seqs.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (shape, regime, batch, seq) indices of point `index`.
    pub fn decode(&self, index: u64) -> (usize, usize, usize, usize) {
        let i = index as usize;
        let q = i % self.seqs.len();
        let i = i / self.seqs.len();
        let b = i % self.batches.len();
        let i = i / self.batches.len();
        let r = i % self.regimes.len();
        (i / self.regimes.len(), r, b, q)
    }

    /// Evaluate points `start..end` into `rows` (cleared first), reusing one plan.
    pub fn evaluate_range(
        &self,
        start: u64,
        end: u64,
        rows: &mut Vec<Row>,
    ) -> Result<(), SweepError> {
        rows.clear();
        let mut plan = TrainingPlan::default();
        let mut settings = self.settings.clone();
        let mut planned: Option<(usize, usize)> = None;
        // The plan's FLOPs as a form of the workload, computed when the plan is.
        let mut units = FlopUnits::default();
        for index in start..end {
            let (s, r, b, q) = self.decode(index);
            let model = &self.shapes[s].shape;
            if planned != Some((s, r)) {
                self.regimes[r].regime.plan_into(model, &mut plan)?;
                units = FlopUnits::of(model, &plan, &FlopSettings::of(&settings))?;
                planned = Some((s, r));
            }
            settings.workload = Workload {
                batch: self.batches[b],
                seq: self.seqs[q],
            };
            rows.push(Row {
                index,
                shape: s,
                regime: r,
                batch: self.batches[b],
                seq: self.seqs[q],
                estimate: evaluate_with_flops(
                    model,
                    &plan,
                    &settings,
                    units.at(self.batches[b], self.seqs[q])?,
                )?,
            });
        }
        Ok(())
    }

    /// Evaluate every point on all cores. Chunks of `chunk` consecutive points are turned into
    /// `T` by `render` (in parallel), then passed in order to `consume` with the number of points
    /// done so far. An error from either stops the sweep.
    pub fn run<T, E>(
        &self,
        chunk: u64,
        render: impl Fn(&Grid, &[Row]) -> T + Sync,
        mut consume: impl FnMut(T, u64) -> Result<(), E>,
    ) -> Result<(), E>
    where
        T: Send,
        E: From<SweepError> + Send,
    {
        let total = self.len();
        let chunk = chunk.max(1);
        let chunks = total.div_ceil(chunk);
        let wave = (rayon::current_num_threads() as u64 * 4).max(1);
        let mut next = 0;
        while next < chunks {
            let end = (next + wave).min(chunks);
            let outputs: Vec<Result<T, SweepError>> = (next..end)
                .into_par_iter()
                .map(|c| {
                    let mut rows = Vec::with_capacity(chunk as usize);
                    self.evaluate_range(c * chunk, ((c + 1) * chunk).min(total), &mut rows)?;
                    Ok(render(self, &rows))
                })
                .collect();
            for (c, out) in (next..end).zip(outputs) {
                consume(out?, ((c + 1) * chunk).min(total))?;
            }
            next = end;
        }
        Ok(())
    }
}

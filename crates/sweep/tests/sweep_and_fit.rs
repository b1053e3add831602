//! Sweeps and fits against hand arithmetic (the seed lab's MiniGPT rules) and against one-by-one
//! estimates.

use ftbudget_core::{MemorySettings, Regime, TransformerSpec, Workload, estimate_memory};
use ftbudget_sweep::{
    FitQuery, Grid, RankSearch, RegimePoint, Row, ScaledShape, SweepError, parse_values,
};

fn lora(rank: u64) -> Box<dyn Regime> {
    ftbudget_roster::registry()
        .unwrap()
        .build(&format!("lora:r={rank}"))
        .unwrap()
}

fn minigpt_grid(widths: &[u64], ranks: &[u64], batches: &[u64], seqs: &[u64]) -> Grid {
    let base = TransformerSpec::minigpt();
    let shapes = widths
        .iter()
        .map(|&w| ScaledShape::build(&base, w, 4).unwrap())
        .collect();
    let regimes = ranks
        .iter()
        .map(|&r| RegimePoint {
            rank: Some(r),
            regime: lora(r),
        })
        .collect();
    Grid::new(
        shapes,
        regimes,
        batches.to_vec(),
        seqs.to_vec(),
        MemorySettings::seed(),
    )
    .unwrap()
}

fn collect(grid: &Grid, chunk: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    grid.run(
        chunk,
        |_, chunk_rows| chunk_rows.to_vec(),
        |mut part, _| {
            rows.append(&mut part);
            Ok::<_, SweepError>(())
        },
    )
    .unwrap();
    rows
}

#[test]
fn lora_trainable_counts_follow_18_r_w_per_layer() {
    // Seed Block A: LoRA on q, k, v, o (w x w) and up/down (w x 4w): r (4 * 2w + 2 * 5w) = 18 r w
    // per layer; 4 layers. At w = 64, r = 8: 9,216 per layer (the seed's figure).
    let grid = minigpt_grid(&[64, 128, 256], &[1, 8, 64], &[16], &[32]);
    let rows = collect(&grid, 2);
    assert_eq!(rows.len(), 9);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.index, i as u64);
        let w = grid.shapes[row.shape].width;
        let r = grid.regimes[row.regime].rank.unwrap();
        assert_eq!(row.estimate.trainable_params, 4 * 18 * r * w, "w={w} r={r}");
    }
    assert_eq!(rows[1].estimate.trainable_params, 4 * 9216);
}

#[test]
fn parallel_rows_equal_one_by_one_estimates_in_order() {
    let grid = minigpt_grid(&[64, 128], &[2, 4, 16], &[1, 3], &[8, 32, 33]);
    let rows = collect(&grid, 5);
    assert_eq!(rows.len(), 36);
    let mut expected = Vec::new();
    for &w in &[64, 128] {
        let shape = ScaledShape::build(&TransformerSpec::minigpt(), w, 4)
            .unwrap()
            .shape;
        for &r in &[2, 4, 16] {
            let plan = lora(r).plan(&shape).unwrap();
            for &batch in &[1, 3] {
                for &seq in &[8, 32, 33] {
                    let mut s = MemorySettings::seed();
                    s.workload = Workload { batch, seq };
                    expected.push((
                        w,
                        r,
                        batch,
                        seq,
                        estimate_memory(&shape, &plan, &s).unwrap(),
                    ));
                }
            }
        }
    }
    for (row, (w, r, batch, seq, memory)) in rows.iter().zip(expected) {
        assert_eq!(grid.shapes[row.shape].width, w);
        assert_eq!(grid.regimes[row.regime].rank, Some(r));
        assert_eq!((row.batch, row.seq), (batch, seq));
        assert_eq!(row.estimate.memory, memory);
        // Seed rough activations: b * s * d_model * n_layer * 16 B.
        assert_eq!(row.estimate.memory.activations, batch * seq * w * 4 * 16);
    }
}

#[test]
fn absurd_grids_are_refused_before_any_work() {
    let ranks = parse_values("--ranks", "1..1048576:+1", 1 << 20).unwrap();
    let widths = parse_values("--widths", "16..16384:+16", 1 << 20).unwrap();
    assert_eq!(widths.len(), 1024);
    let err =
        ftbudget_sweep::grid::checked_points(&[widths.len() as u64, ranks.len() as u64, 1, 1])
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sweep has 1073741824 points, more than the limit of 1000000000; narrow a range"
    );
}

/// MiniGPT, seed conventions, LoRA r=8 (hand arithmetic, seed Block B):
/// base 229,952 params at 2 B (fp16) = 459,904 B; 36,864 trainable at 2 (fp16) + 4 (master) +
/// 2 (grad) + 8 (Adam) = 16 B = 589,824 B; activations b * s * 64 * 4 * 16 = 4,096 b s B.
/// Static total 1,049,728 B.
#[test]
fn fit_answers_match_hand_arithmetic_and_sit_on_the_boundary() {
    let model = TransformerSpec::minigpt().build().unwrap();
    let capacity = 10 * 1024 * 1024;
    let query = FitQuery {
        model: &model,
        settings: MemorySettings::seed(),
        capacity,
        max_batch: 1 << 24,
        max_seq: 1 << 24,
    };
    let build = |r: u64| Ok(lora(r));
    let answer = query
        .answer(
            lora(8).as_ref(),
            Some(RankSearch {
                max: 1 << 20,
                build: &build,
            }),
        )
        .unwrap();
    // Workload b16 s32: 1,049,728 + 4,096 * 512 = 3,146,880 B in the buckets.
    assert_eq!(answer.total_bytes, 3_146_880);
    // "Fits" is decided on the peak: the steady step at the forward's end holds everything but
    // the gradients (73,728 B), plus the int64 input ids (8 x 512 = 4,096 B).
    let peak = 3_146_880 - 73_728 + 4_096;
    assert_eq!(answer.peak_bytes, peak);
    assert!(answer.fits);
    assert_eq!(answer.headroom_bytes, i128::from(10_485_760 - peak));
    // Batch at seq 32: 976,000 + (131,072 + 256) b <= 10,485,760 -> b = 72.
    let batch = answer.max_batch.unwrap();
    assert_eq!(batch.value, 72);
    assert_eq!(batch.total_bytes, 1_049_728 + 72 * 131_072);
    assert_eq!(batch.peak_bytes, 976_000 + 72 * 131_328);
    assert_eq!(batch.headroom_bytes, 10_485_760 - 976_000 - 72 * 131_328);
    // Seq at batch 16: 976,000 + (65,536 + 128) s -> s = 144.
    assert_eq!(answer.max_seq.unwrap().value, 144);
    // Rank at b16 s32: at high ranks the optimizer step peaks: 459,904 + 4,096 + 92,160 r
    // (4,608 r trainable x 20 B: weights 6, gradient 2, state 8, AdamW's foreach temporary 4)
    // -> r = 108.
    assert_eq!(answer.max_rank.unwrap().value, 108);

    // Just below and just above each boundary, estimated one by one.
    let peak = |r: u64, batch: u64, seq: u64| {
        let mut s = MemorySettings::seed();
        s.workload = Workload { batch, seq };
        let plan = lora(r).plan(&model).unwrap();
        estimate_memory(&model, &plan, &s).unwrap().peak.bytes
    };
    assert!(peak(8, 72, 32) <= capacity && peak(8, 73, 32) > capacity);
    assert!(peak(8, 16, 144) <= capacity && peak(8, 16, 145) > capacity);
    assert!(peak(108, 16, 32) <= capacity && peak(109, 16, 32) > capacity);
}

#[test]
fn nothing_fits_in_a_tiny_gpu() {
    let model = TransformerSpec::minigpt().build().unwrap();
    let query = FitQuery {
        model: &model,
        settings: MemorySettings::seed(),
        capacity: 1_000_000,
        max_batch: 1 << 24,
        max_seq: 1 << 24,
    };
    let answer = query.answer(lora(8).as_ref(), None).unwrap();
    assert!(!answer.fits);
    assert_eq!(
        answer.headroom_bytes,
        1_000_000 - (3_146_880 - 73_728 + 4_096)
    );
    // Even batch 1 at seq 32 peaks at 976,000 + 131,328 B.
    assert_eq!(answer.max_batch, None);
    assert!(!answer.has_rank);
}

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
    // Workload b16 s32: 1,049,728 + 4,096 * 512 = 3,146,880 B.
    assert_eq!(answer.total_bytes, 3_146_880);
    assert!(answer.fits);
    assert_eq!(answer.headroom_bytes, 10_485_760 - 3_146_880);
    // Batch at seq 32: 1,049,728 + 131,072 b <= 10,485,760 -> b = 71.
    let batch = answer.max_batch.unwrap();
    assert_eq!(batch.value, 71);
    assert_eq!(batch.total_bytes, 1_049_728 + 71 * 131_072);
    assert_eq!(batch.headroom_bytes, 129_920);
    // Seq at batch 16: 1,049,728 + 65,536 s -> s = 143.
    assert_eq!(answer.max_seq.unwrap().value, 143);
    // Rank at b16 s32: 459,904 + 2,097,152 + 73,728 r (4,608 r trainable x 16 B) -> r = 107.
    assert_eq!(answer.max_rank.unwrap().value, 107);

    // Just below and just above each boundary, estimated one by one.
    let total = |r: u64, batch: u64, seq: u64| {
        let mut s = MemorySettings::seed();
        s.workload = Workload { batch, seq };
        let plan = lora(r).plan(&model).unwrap();
        estimate_memory(&model, &plan, &s).unwrap().total
    };
    assert!(total(8, 71, 32) <= capacity && total(8, 72, 32) > capacity);
    assert!(total(8, 16, 143) <= capacity && total(8, 16, 144) > capacity);
    assert!(total(107, 16, 32) <= capacity && total(108, 16, 32) > capacity);
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
    assert_eq!(answer.headroom_bytes, 1_000_000 - 3_146_880);
    // Even batch 1 at seq 32 needs 1,049,728 + 131,072 B.
    assert_eq!(answer.max_batch, None);
    assert!(!answer.has_rank);
}

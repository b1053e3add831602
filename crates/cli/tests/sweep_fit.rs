//! End-to-end tests of `ftbudget sweep` and `ftbudget fit`. Expected numbers are the seed lab's
//! hand arithmetic for MiniGPT (d_model 64, 4 layers, d_ff 256, vocab 512, tied): LoRA r trains
//! 18 r d_model parameters per layer; under the seed conventions a trainable parameter costs
//! 16 B, a frozen one 2 B, activations batch x seq x 64 x 4 x 16 B.

use assert_cmd::Command;
use serde_json::Value;

fn ftbudget() -> Command {
    Command::cargo_bin("ftbudget").unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = ftbudget().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn error_of(args: &[&str]) -> String {
    let out = ftbudget().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "{args:?} wrote rows before failing");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    err.trim_end().to_string()
}

#[test]
fn sweep_csv_has_one_row_per_point_with_hand_checked_figures() {
    let text = stdout_of(&[
        "sweep",
        "--conventions",
        "seed",
        "--ranks",
        "1,2,4,...,16",
        "--widths",
        "64..256",
        "--batch",
        "8,16",
    ]);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // 5 ranks x 3 widths x 2 batches.
    assert_eq!(rows.len(), 30);
    for row in &rows {
        let num = |name: &str| row[col(name)].parse::<u64>().unwrap();
        let (w, r, b) = (num("width"), num("rank"), num("batch"));
        assert_eq!(num("trainable_params"), 4 * 18 * r * w);
        assert_eq!(num("intermediate"), 4 * w);
        assert_eq!(num("activations_bytes"), b * 32 * w * 4 * 16);
    }
    // Width 64, r = 8, batch 16: 229,952 frozen x 2 B + 36,864 trainable x 16 B + 2,097,152 B.
    let r8 = rows
        .iter()
        .find(|r| r[col("width")] == "64" && r[col("rank")] == "8" && r[col("batch")] == "16")
        .unwrap();
    assert_eq!(r8[col("total_bytes")], "3146880");
    assert_eq!(r8[col("regime")], "lora:r=8");
}

#[test]
fn sweep_jsonl_lines_parse_and_follow_the_grid_order() {
    let text = stdout_of(&[
        "sweep",
        "--format",
        "jsonl",
        "--regime",
        "qlora:double_quant=true",
        "--ranks",
        "4,8",
        "--layers",
        "2,4",
        "--seq",
        "16..64",
    ]);
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * 2 * 3);
    let keys: Vec<(u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["layers"].as_u64().unwrap(),
                r["rank"].as_u64().unwrap(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys[0], (2, 4, 16));
    assert_eq!(keys[1], (2, 4, 32));
    assert_eq!(keys[3], (2, 8, 16));
    assert_eq!(keys[11], (4, 8, 64));
    assert_eq!(rows[0]["regime"], "qlora:r=4,double_quant=true");
    // 18 r d_model per layer.
    assert_eq!(rows[11]["trainable_params"], 4 * 18 * 8 * 64);
}

#[test]
fn bad_ranges_are_clear_errors_before_any_output() {
    assert_eq!(
        error_of(&["sweep", "--ranks", ""]),
        "error: --ranks: the list is empty"
    );
    assert_eq!(
        error_of(&["sweep", "--widths", "16384..64"]),
        "error: --widths: range `16384..64` is reversed"
    );
    assert_eq!(
        error_of(&["sweep", "--ranks", "0,8"]),
        "error: --ranks: 0 is out of range (1 to 1048576)"
    );
    assert_eq!(
        error_of(&["sweep", "--batch", "0"]),
        "error: --batch: 0 is out of range (1 to 16777216)"
    );
    assert_eq!(
        error_of(&["sweep", "--ranks", "1..1048576:+1", "--batch", "1..1024:+1"]),
        "error: the sweep has 1073741824 points, more than the limit of 1000000000; narrow a range"
    );
    assert!(
        error_of(&["sweep", "--widths", "100"])
            .starts_with("error: --widths: 100 does not give minigpt a whole number of heads")
    );
    assert_eq!(
        error_of(&["sweep", "--regime", "full-ft", "--ranks", "8"]),
        "error: --ranks: regime `full-ft` has no rank"
    );
    assert_eq!(
        error_of(&["sweep", "--regime", "lora:r=8", "--ranks", "8"]),
        "error: --ranks: the spec `lora:r=8` already sets r; give the ranks in one place"
    );
}

fn estimate_peak(batch: u64, seq: u64) -> u64 {
    let text = stdout_of(&[
        "estimate",
        "--conventions",
        "seed",
        "--regime",
        "lora:r=8",
        "--format",
        "json",
        "--batch",
        &batch.to_string(),
        "--seq",
        &seq.to_string(),
    ]);
    let v: Value = serde_json::from_str(&text).unwrap();
    v["rows"][0]["peak"]["bytes"].as_u64().unwrap()
}

#[test]
fn fit_answers_sit_on_the_boundary() {
    let capacity = 10 * 1024 * 1024;
    let text = stdout_of(&[
        "fit",
        "--gpu",
        "10MiB",
        "--conventions",
        "seed",
        "--regime",
        "lora:r=8",
        "--format",
        "json",
        // No context and no margin: the budget for the peak is the GPU's 10 MiB (a whole number
        // of 2 MiB segments), so the limits below are the peak's own (tests/reserved.rs checks
        // the context and the margin).
        "--cuda-context",
        "none",
        "--margin",
        "0",
    ]);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["capacity_bytes"], capacity);
    assert_eq!(v["peak_budget_bytes"], capacity);
    let a = &v["answers"][0];
    // "Fits" is decided on the step's peak. Seed conventions, LoRA r=8 (36,864 trainable): the
    // steady step peaks when the forward ends, with weights (681,088 B), optimizer state
    // (8 B each: 294,912 B), activations (131,072 B per sequence of 32) and the int64 input ids
    // (256 B per sequence) alive, but no gradient yet: 976,000 B + 131,328 B per sequence, so 72
    // fit and 73 do not (the bucket total, with the gradients' 73,728 B, would stop at 71).
    assert_eq!(a["max_batch"]["value"], 72);
    assert_eq!(
        a["max_batch"]["headroom_bytes"],
        capacity - 976_000 - 72 * 131_328
    );
    // 65,664 B per token of sequence at batch 16: 144 fit.
    assert_eq!(a["max_seq"]["value"], 144);
    // Rank r (4,608 r trainable): at high ranks the optimizer step is the peak, with 459,904 B of
    // frozen fp16 weights, the 4,096 B of ids, and per trainable parameter 6 B of weights (fp16 +
    // fp32 master), 2 B of gradient, 8 B of state and AdamW's 4 B foreach temporary: 20 B, so
    // 459,904 + 4,096 + 92,160 r <= 10 MiB gives r <= 108.
    assert_eq!(a["max_rank"]["value"], 108);
    assert_eq!(a["fits"], true);
    assert_eq!(a["total_bytes"], 3_146_880);
    assert_eq!(a["peak_bytes"], 3_146_880 - 73_728 + 4_096);
    // The rough rule has no loss terms: the forward's end already holds every activation.
    assert_eq!(a["peak_phase"], "forward");
    assert_eq!(a["headroom_bytes"], capacity - (3_146_880 - 73_728 + 4_096));
    // Just below and above, through `estimate`.
    assert!(estimate_peak(72, 32) <= capacity && estimate_peak(73, 32) > capacity);
    assert!(estimate_peak(16, 144) <= capacity && estimate_peak(16, 145) > capacity);
}

#[test]
fn fit_table_and_gpu_presets() {
    let text = stdout_of(&["fit", "--gpu", "rtx-4090", "--regime", "full-ft"]);
    // 24,564 MiB, the total nvidia-smi reports for an RTX 4090.
    assert!(text.starts_with("minigpt on rtx-4090 (23.99 GiB = 25,757,220,864 B per GPU)"));
    assert!(text.contains("Full FT"));
    assert!(
        error_of(&["fit", "--gpu", "24XB"]).starts_with("error: --gpu: `24XB`: unknown unit `XB`")
    );
}

/// Full fine-tuning of MiniGPT under the seed conventions (seq 32, eager attention): by hand,
/// 229,376 weight elements per token in matmuls (4 layers x 49,152 + the tied 64 x 512 lm_head)
/// at 2 FLOPs each on 32 b tokens, plus eager attention's 2 x b x 4 heads x 32^2 x (16 + 16) per
/// layer, forward; backward twice the forward: 3 b (14,680,064 + 1,048,576) FLOPs.
fn minigpt_full_ft_step_flops(batch: u64) -> u64 {
    3 * batch * (2 * 229_376 * 32 + 2 * 4 * 32 * 32 * 32 * 4)
}

#[test]
fn fit_times_the_largest_batch_that_fits() {
    // A100 datasheet: 312 TFLOP/s dense bf16/fp16; at MFU 0.5 a GPU does 156e12 FLOP/s.
    let rate = 312e12 * 0.5;
    let v: Value = serde_json::from_str(&stdout_of(&[
        "fit",
        "--conventions",
        "seed",
        "--gpu",
        "a100-80g",
        "--regime",
        "full-ft",
        "--tokens",
        "1M",
        "--mfu",
        "0.5",
        "--price-per-gpu-hour",
        "2",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["timing"]["tokens"], 1_000_000);
    assert_eq!(v["timing"]["peak_flops_per_gpu"], 312_000_000_000_000u64);
    assert_eq!(v["timing"]["mfu_is_default"], false);
    let row = &v["answers"][0];
    let batch = row["max_batch"]["value"].as_u64().unwrap();
    let at = &row["time_at_max_batch"];
    assert_eq!(at["batch"], batch);
    assert_eq!(at["seq"], 32);
    let step = minigpt_full_ft_step_flops(batch);
    assert_eq!(at["flops"]["step"], step);
    assert_eq!(at["tokens_per_step"], 32 * batch);
    let steps = 1_000_000u64.div_ceil(32 * batch);
    assert_eq!(at["steps"], steps);
    assert_eq!(at["total_flops"], steps * step);
    let close = |got: &Value, want: f64| {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() <= want * 1e-12, "{got} vs {want}");
    };
    close(&at["step_seconds"], step as f64 / rate);
    close(&at["seconds"], steps as f64 * step as f64 / rate);
    close(&at["gpu_hours"], steps as f64 * step as f64 / rate / 3600.0);
    close(
        &at["cost"],
        2.0 * steps as f64 * step as f64 / rate / 3600.0,
    );

    // The table states the peak, the MFU and the run; the CSV carries the same figures.
    let table = stdout_of(&[
        "fit",
        "--conventions",
        "seed",
        "--gpu",
        "a100-80g",
        "--regime",
        "full-ft",
        "--tokens",
        "1M",
    ]);
    assert!(
        table.contains("time at the largest batch that fits, 1,000,000 tokens on 1 x a100-80g")
    );
    assert!(
        table.contains("peak 312.0 TFLOP/s dense fp16 per GPU"),
        "{table}"
    );
    assert!(table.contains("MFU 0.40 (the default, an assumption: set --mfu)"));
    let csv = stdout_of(&[
        "fit",
        "--conventions",
        "seed",
        "--gpu",
        "a100-80g",
        "--regime",
        "full-ft",
        "--tokens",
        "1M",
        "--format",
        "csv",
    ]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(col("time_batch"), batch.to_string());
    assert_eq!(col("time_flops_step"), step.to_string());
    assert_eq!(col("time_steps"), steps.to_string());

    // Without a token count there is no time; a GPU given as a size has no peak to time at.
    let v: Value = serde_json::from_str(&stdout_of(&[
        "fit",
        "--conventions",
        "seed",
        "--gpu",
        "a100-80g",
        "--format",
        "json",
    ]))
    .unwrap();
    assert!(v["timing"].is_null());
    assert!(v["answers"][0]["time_at_max_batch"].is_null());
    let err = error_of(&["fit", "--gpu", "80GiB", "--tokens", "1B"]);
    assert!(
        err.contains("--gpu: `80GiB` is not a preset with a datasheet peak"),
        "{err}"
    );
}

#[test]
fn sweep_rows_carry_step_time_and_with_tokens_the_run() {
    // H100 datasheet (SXM): 1,979 TFLOP/s bf16 with sparsity, 989.5 dense; default MFU 0.4.
    let rate = 989.5e12 * 0.4;
    let text = stdout_of(&[
        "sweep",
        "--conventions",
        "seed",
        "--regime",
        "full-ft",
        "--batch",
        "1,16",
        "--precision",
        "amp-bf16",
        "--tokens",
        "1000",
        "--price-per-gpu-hour",
        "3",
    ]);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for line in lines {
        let row: Vec<&str> = line.split(',').collect();
        let batch: u64 = row[col("batch")].parse().unwrap();
        let step = minigpt_full_ft_step_flops(batch);
        assert_eq!(row[col("flops_step")], step.to_string());
        assert_eq!(row[col("timing_gpu")], "h100-80g");
        let num = |name: &str| row[col(name)].parse::<f64>().unwrap();
        let close = |got: f64, want: f64| assert!((got - want).abs() <= want * 1e-12);
        close(num("step_seconds"), step as f64 / rate);
        let steps = 1000u64.div_ceil(32 * batch) as f64;
        assert_eq!(row[col("tokens")], "1000");
        close(num("wall_hours"), steps * step as f64 / rate / 3600.0);
        close(num("gpu_hours"), steps * step as f64 / rate / 3600.0);
        close(num("cost"), 3.0 * steps * step as f64 / rate / 3600.0);
    }
    // JSON lines carry the same keys; without --tokens the run's are null.
    let line = stdout_of(&["sweep", "--format", "jsonl"]);
    let v: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert!(v["step_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["wall_hours"].is_null() && v["cost"].is_null());
    let err = error_of(&["sweep", "--gpu", "a100-80g", "--peak", "fp8"]);
    assert_eq!(err, "error: --peak: a100-80g has no FP8 tensor cores");
}

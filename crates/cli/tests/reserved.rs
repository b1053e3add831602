//! The reserved estimate (what `nvidia-smi` would show) end to end: `estimate`'s JSON and table,
//! `fit`'s decision on reserved + margin, and `estimate --timeline`.
//!
//! The figures are the allocator's rule applied by hand: MiniGPT under the seed conventions,
//! LoRA r=8 peaks at 3,077,248 B (2.93 MiB), which whole 2 MiB segments hold in 4 MiB; with the
//! default 512 MiB context the estimate is 516 MiB = 541,065,216 B. Full fine-tuning peaks above
//! 4 MiB (5.07 MiB), so 6 MiB of segments: 518 MiB.

use assert_cmd::Command;
use serde_json::Value;
use std::path::PathBuf;

const MIB: u64 = 1 << 20;

fn run(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("ftbudget")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

fn json_of(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn estimate(extra: &[&str]) -> Value {
    let mut args = vec![
        "estimate",
        "--model",
        "minigpt",
        "--conventions",
        "seed",
        "--regime",
        "full-ft",
        "--regime",
        "lora:r=8",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    json_of(&args)
}

#[test]
fn every_row_carries_the_reserved_estimate() {
    let v = estimate(&[]);
    let rows = v["rows"].as_array().unwrap();
    let reserved: Vec<u64> = rows
        .iter()
        .map(|r| r["reserved"]["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(reserved, [518 * MIB, 516 * MIB]);
    let lora = &rows[1];
    assert_eq!(lora["peak"]["bytes"], 3_077_248);
    assert_eq!(lora["reserved"]["context_bytes"], 512 * MIB);
    assert_eq!(
        lora["reserved"]["allocator_rounding_bytes"],
        4 * MIB - 3_077_248
    );
    assert!(
        lora["reserved"]["model"]
            .as_str()
            .unwrap()
            .starts_with("estimate: CUDA context 512 MiB")
    );
}

/// The cited presets and a figure in MiB: 1,343 MiB (V100, CUDA 11.2), 300 MiB given.
#[test]
fn cuda_context_is_overridable() {
    let eager = estimate(&["--cuda-context", "eager-v100"]);
    assert_eq!(
        eager["rows"][1]["reserved"]["bytes"].as_u64().unwrap(),
        (1343 + 4) * MIB
    );
    let given = estimate(&["--cuda-context", "300"]);
    assert_eq!(
        given["rows"][1]["reserved"]["bytes"].as_u64().unwrap(),
        (300 + 4) * MIB
    );
    let out = run(&["estimate", "--cuda-context", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cuda-context"), "{err}");
}

#[test]
fn table_has_a_reserved_column() {
    let out = run(&[
        "estimate",
        "--model",
        "minigpt",
        "--conventions",
        "seed",
        "--regime",
        "lora:r=8",
        "--format",
        "markdown",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| Reserved (est.) |"), "{text}");
    assert!(text.contains("516.00 MiB"), "{text}");
}

fn fits(gpu: &str, margin: &str) -> (bool, Value) {
    let v = json_of(&[
        "fit",
        "--model",
        "minigpt",
        "--conventions",
        "seed",
        "--regime",
        "lora:r=8",
        "--gpu",
        gpu,
        "--margin",
        margin,
        "--format",
        "json",
    ]);
    (v["answers"][0]["fits"].as_bool().unwrap(), v)
}

/// `fit` decides on reserved + margin: LoRA r=8's 516 MiB fit a 516 MiB GPU with no margin, not
/// a 515 MiB one, and not 516 MiB with a 1% margin (5.16 MiB more).
#[test]
fn fit_decides_on_reserved_plus_margin() {
    let (fits_exactly, v) = fits("516MiB", "0");
    assert!(fits_exactly);
    assert_eq!(v["peak_budget_bytes"], 4 * MIB);
    assert_eq!(v["answers"][0]["reserved"]["bytes"], 516 * MIB);
    assert!(!fits("515MiB", "0").0);
    let (with_margin, v) = fits("516MiB", "1%");
    assert!(!with_margin);
    assert_eq!(v["margin_bytes"], 516 * MIB / 100);
    // The default margin is 5%, stated in the output.
    let out = run(&["fit", "--model", "minigpt", "--gpu", "24GiB"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("a 5% margin (1.20 GiB)"), "{text}");
    assert!(
        text.contains("an estimate of what nvidia-smi shows"),
        "{text}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ftbudget-reserved-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn timeline_writes_a_png() {
    let dir = scratch("ok");
    let path = dir.join("timeline.png");
    let out = run(&[
        "estimate",
        "--model",
        "minigpt",
        "--conventions",
        "seed",
        "--timeline",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 1, "only the PNG is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A path that cannot be written (a folder stands there): one line naming the flag, exit 2,
/// and no temporary file left behind.
#[test]
fn timeline_to_a_bad_path_leaves_nothing() {
    let dir = scratch("bad");
    let taken = dir.join("taken.png");
    std::fs::create_dir(&taken).unwrap();
    let out = run(&[
        "estimate",
        "--model",
        "minigpt",
        "--timeline",
        taken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --timeline "), "{err}");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["taken.png"]);
    let out = run(&["estimate", "--timeline", "/nonexistent-ftbudget/x.png"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

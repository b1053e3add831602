//! Every output format of `estimate` (table, markdown, json, csv, jsonl) and `sweep` (csv, jsonl)
//! on MiniGPT under the seed lab's conventions, pinned by insta snapshots (committed under
//! `tests/snapshots/`; review a change with `cargo insta review` or `INSTA_UPDATE=always`).
//!
//! A snapshot only says the output did not change. The figures that make it right come from the
//! seed lab's hand arithmetic and are asserted on every format independently of the snapshots:
//! MiniGPT (d_model 64, 4 layers) trains 229,952 parameters in full; LoRA on q, k, v, o, up and
//! down trains r x (in + out) per module, 18 r d_model per layer: 18,432 / 36,864 / 73,728 for
//! r = 4 / 8 / 16; DoRA r=8 adds one magnitude per output feature, 2,304 more: 39,168. Under the
//! seed conventions LoRA r=8 takes 229,952 x 2 B + 36,864 x 16 B + 16 x 32 x 64 x 4 x 16 B =
//! 3,146,880 B.

use assert_cmd::Command;
use serde_json::Value;

const TRAINABLE: [(&str, u64); 6] = [
    ("full-ft", 229_952),
    ("lora:r=4", 18_432),
    ("lora:r=8", 36_864),
    ("lora:r=16", 73_728),
    ("qlora:r=8", 36_864),
    ("dora:r=8", 39_168),
];
const LORA_R8_TOTAL_BYTES: u64 = 3_146_880;

fn stdout_of(args: &[&str]) -> String {
    let out = Command::cargo_bin("ftbudget")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn estimate(format: &str) -> String {
    stdout_of(&[
        "estimate",
        "--model",
        "minigpt",
        "--conventions",
        "seed",
        "--format",
        format,
    ])
}

fn sweep(format: &str) -> String {
    stdout_of(&[
        "sweep",
        "--model",
        "minigpt",
        "--conventions",
        "seed",
        "--ranks",
        "4,8",
        "--widths",
        "64..128",
        "--format",
        format,
    ])
}

/// CSV text as header-keyed records.
fn csv_records(text: &str) -> Vec<Value> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{line}");
            let object = header
                .iter()
                .zip(cells)
                .map(|(key, cell)| {
                    let value = cell
                        .parse::<u64>()
                        .map_or_else(|_| Value::from(cell), Value::from);
                    (key.to_string(), value)
                })
                .collect();
            Value::Object(object)
        })
        .collect()
}

fn jsonl_records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The seed lab's counts, and LoRA r=8's total, in rows keyed like the CSV header.
fn assert_seed_lab_rows(rows: &[Value]) {
    assert_eq!(rows.len(), TRAINABLE.len());
    for (row, (regime, trainable)) in rows.iter().zip(TRAINABLE) {
        assert_eq!(row["regime"], regime);
        assert_eq!(row["trainable_params"], trainable, "{regime}");
        let frozen = if regime == "full-ft" { 0 } else { 229_952 };
        assert_eq!(row["frozen_params"], frozen, "{regime}");
    }
    assert_eq!(rows[2]["total_bytes"], LORA_R8_TOTAL_BYTES);
}

#[test]
fn estimate_table_and_markdown() {
    for format in ["table", "markdown"] {
        let text = estimate(format);
        for (regime, trainable) in TRAINABLE {
            let label_row = text
                .lines()
                .find(|l| l.contains(&group(trainable)))
                .unwrap_or_else(|| panic!("{format}: no row with {trainable} ({regime})"));
            assert!(label_row.contains("229,952"), "{label_row}");
        }
        // 3,146,880 B = 3.00 MiB.
        assert!(
            text.lines()
                .any(|l| l.contains("LoRA r=8") && l.contains("3.00 MiB")),
            "{text}"
        );
        insta::assert_snapshot!(format!("estimate_{format}"), text);
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[test]
fn estimate_json() {
    let text = estimate("json");
    let v: Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::json!({
                "regime": r["regime"],
                "trainable_params": r["trainable_params"],
                "frozen_params": r["frozen_params"],
                "total_bytes": r["bytes"]["total"],
            })
        })
        .collect();
    assert_seed_lab_rows(&rows);
    insta::assert_snapshot!("estimate_json", text);
}

#[test]
fn estimate_csv_and_jsonl_share_one_schema() {
    let csv = estimate("csv");
    let jsonl = estimate("jsonl");
    let from_csv = csv_records(&csv);
    let from_jsonl = jsonl_records(&jsonl);
    assert_seed_lab_rows(&from_csv);
    assert_seed_lab_rows(&from_jsonl);
    // The same columns in the same order.
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let keys: Vec<&str> = from_jsonl[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted_header = header.clone();
    sorted_header.sort_unstable();
    assert_eq!(
        keys, sorted_header,
        "serde_json orders keys; compare as sets"
    );
    insta::assert_snapshot!("estimate_csv", csv);
    insta::assert_snapshot!("estimate_jsonl", jsonl);
}

/// The float time columns of a row (`sweep` fills them; `estimate` leaves them empty, as it
/// does `tokens`).
const TIME_COLUMNS: [&str; 5] = ["mfu", "step_seconds", "wall_hours", "gpu_hours", "cost"];

#[test]
fn sweep_csv_and_jsonl_share_the_estimate_schema() {
    let csv = sweep("csv");
    let jsonl = sweep("jsonl");
    assert_eq!(
        csv.lines().next(),
        estimate("csv").lines().next(),
        "estimate and sweep write the same CSV header"
    );
    let from_csv = csv_records(&csv);
    let as_json = |rows: &[Value]| -> Vec<Value> {
        // CSV cells are text: read the fraction with the JSON parser, as the JSON side is.
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(text) = r["trainable_fraction"].as_str() {
                    r["trainable_fraction"] = serde_json::from_str(text).unwrap();
                }
                // The time columns: an empty cell is JSON's null; a figure is compared below
                // to 1e-12 (serde_json's float parser may round the last digit differently).
                if r["tokens"] == "" {
                    r["tokens"] = Value::Null;
                }
                for key in TIME_COLUMNS {
                    r[key] = match r[key].as_str() {
                        Some("") => Value::Null,
                        Some(text) => {
                            Value::String(format!("{:.12e}", text.parse::<f64>().unwrap()))
                        }
                        None => r[key].clone(),
                    };
                }
                r
            })
            .collect()
    };
    let rounded = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .map(|mut r| {
                for key in TIME_COLUMNS {
                    if let Some(x) = r[key].as_f64() {
                        r[key] = Value::String(format!("{x:.12e}"));
                    }
                }
                r
            })
            .collect()
    };
    assert_eq!(as_json(&from_csv), rounded(jsonl_records(&jsonl)));
    // Every row is timed on the default GPU (H100 SXM, 989.5 TFLOP/s dense bf16) at MFU 0.4.
    for r in &from_csv {
        assert_eq!(r["timing_gpu"], "h100-80g");
        let flops: f64 = r["flops_step"].as_f64().unwrap();
        let seconds: f64 = r["step_seconds"].as_str().unwrap().parse().unwrap();
        assert!((seconds - flops / (989.5e12 * 0.4)).abs() <= seconds * 1e-12);
    }
    // Width 64 is MiniGPT itself: the seed lab's LoRA r=4 and r=8 rows.
    assert_eq!(from_csv[0]["trainable_params"], 18_432);
    assert_eq!(from_csv[1]["trainable_params"], 36_864);
    assert_eq!(from_csv[1]["total_bytes"], LORA_R8_TOTAL_BYTES);
    // Width 128 doubles d_model: 18 r d_model per layer doubles too.
    assert_eq!(from_csv[3]["trainable_params"], 73_728);
    insta::assert_snapshot!("sweep_csv", csv);
    insta::assert_snapshot!("sweep_jsonl", jsonl);
}

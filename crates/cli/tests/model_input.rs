//! `--model` with files: config.json and safetensors inputs give peft's counts in the JSON
//! output; bad files fail with one `error:` line and exit code 2, never a panic.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn ftbudget() -> Command {
    Command::cargo_bin("ftbudget").unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str, contents: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("model-input")
        .join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}

fn first_row(model: &Path, regime: &str) -> serde_json::Value {
    let out = ftbudget()
        .args([
            "estimate", "--format", "json", "--regime", regime, "--model",
        ])
        .arg(model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["rows"][0].clone()
}

/// Expect exit code 2 and a single stderr line containing `needle`.
fn fails_with(model: &Path, needle: &str) {
    let out = ftbudget()
        .args(["estimate", "--model"])
        .arg(model)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_json_counts_match_peft_records() {
    // fixtures/peft/generated_counts.json: phi3-tiny and mixtral-tiny, all-linear r=8.
    let phi3 = repo().join("fixtures/peft/configs/phi3-tiny.json");
    let row = first_row(&phi3, "lora:r=8");
    assert_eq!(row["trainable_params"], 11_776);
    let mixtral = repo().join("fixtures/peft/configs/mixtral-tiny.json");
    let row = first_row(&mixtral, "lora:r=8");
    assert_eq!(row["trainable_params"], 51_264);
    assert_eq!(row["all_params"], 236_928);
    assert_eq!(row["base_params"], 236_928 - 51_264);
    // The folder holding a config.json works too; modules_to_save counts the copy twice.
    let config = std::fs::read(repo().join("fixtures/peft/configs/gemma-tiny.json")).unwrap();
    let dir = tmp("gemma/config.json", &config)
        .parent()
        .unwrap()
        .to_path_buf();
    let row = first_row(
        &dir,
        "lora:r=8,targets=q_proj+v_proj,modules_to_save=lm_head",
    );
    assert_eq!(row["trainable_params"], 11_008);
    assert_eq!(row["all_params"], 95_552);
}

#[test]
fn bad_config_files_are_one_line_errors() {
    fails_with(
        &tmp("truncated.json", br#"{"model_type": "llama", "hidden_si"#),
        "malformed JSON",
    );
    fails_with(
        &tmp("zero.json", br#"{"model_type": "llama", "hidden_size": 0}"#),
        "hidden_size",
    );
    fails_with(
        &tmp("negative.json", br#"{"model_type": "gpt2", "n_layer": -1}"#),
        "n_layer",
    );
    fails_with(
        &tmp(
            "heads.json",
            br#"{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 7}"#,
        ),
        "num_attention_heads: 7 does not divide hidden_size 100",
    );
    fails_with(
        &tmp(
            "huge.json",
            br#"{"model_type": "llama", "hidden_size": 4294967296, "num_attention_heads": 1, "vocab_size": 4294967296}"#,
        ),
        "overflows",
    );
    fails_with(
        &tmp("bert.json", br#"{"model_type": "bert"}"#),
        "unsupported model_type `bert` (supported: llama, exaone, mistral",
    );
}

#[test]
fn bad_safetensors_files_are_one_line_errors() {
    fails_with(&tmp("short.safetensors", b"\x05\x00"), "8-byte");
    fails_with(
        &tmp(
            "long-header.safetensors",
            b"\xff\xff\xff\xff\x00\x00\x00\x00{}",
        ),
        "too large",
    );
    let header = br#"{"w.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 8]); // 8 of the 16 data bytes
    fails_with(&tmp("truncated.safetensors", &bytes), "truncated");
    let header = br#"{"w.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    fails_with(&tmp("malformed.safetensors", &bytes), "malformed header");
}

#[test]
fn unknown_target_lists_the_model_modules() {
    let out = ftbudget()
        .args([
            "estimate",
            "--model",
            "phi-3-mini",
            "--regime",
            "lora:targets=q_proj",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the model has: qkv_proj, o_proj, gate_up_proj, down_proj, lm_head"),
        "{stderr}"
    );
}

#[test]
fn presets_lists_every_preset_with_its_total() {
    let out = ftbudget().arg("presets").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        ftbudget_models::presets::names().len(),
        "{stdout}"
    );
    // Published totals (model cards; Qwen3-8B's num_parameters() equals the Hub's total).
    assert!(
        stdout.contains("qwen3-8b") && stdout.contains("8,190,735,360"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mixtral-8x7b") && stdout.contains("46,702,792,704"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gemma-2b") && stdout.contains("2,506,172,416"),
        "{stdout}"
    );
}

/// A multimodal config (Gemma 3 with its vision tower) is read as its language model, and the
/// output says the vision tower is not counted; the total is peft's language-model part
/// (`fixtures/peft/families_counts.json`, `gemma3-mm-tiny`, part `lm`: 81,280).
#[test]
fn multimodal_config_is_read_as_its_language_model_with_a_note() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/peft/families-configs/gemma3-mm-tiny.json"
    );
    let out = ftbudget()
        .args([
            "estimate", "--model", config, "--regime", "full-ft", "--format", "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vision tower and projector are not counted"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["model"]["total_params"], 81_280);
}

/// A plain run never fails on the default sequence: GPT-2's 1024-position table becomes the
/// sequence (and the output says so); an explicit `--seq` beyond it is still refused.
#[test]
fn default_sequence_follows_a_shorter_position_table() {
    let out = ftbudget()
        .args(["estimate", "--model", "gpt2", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--seq not given: using 1024 tokens"),
        "{stderr}"
    );
    let out = ftbudget()
        .args(["estimate", "--model", "gpt2", "--seq", "2048"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("learned position table"));
}

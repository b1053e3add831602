//! `--recipe`: recipes copied from the tools' repositories (fixtures/recipes/), their trainable
//! counts held to peft 0.21.2 (fixtures/peft/recipes_counts.json), their settings to the recipe
//! text, flags overriding the recipe, and contradictions refused naming the key.

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn path(rel: &str) -> String {
    root().join(rel).to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> (Value, String) {
    let out = Command::cargo_bin("ftbudget")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn error_of(args: &[&str]) -> String {
    let out = Command::cargo_bin("ftbudget")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    // The error line (recipe notes come before it; clap adds a hint after its own).
    err.lines()
        .find(|l| l.starts_with("error:"))
        .unwrap()
        .to_string()
}

#[test]
fn an_axolotl_8bit_recipe_counts_as_peft_and_bitsandbytes() {
    let recipe = path("fixtures/recipes/axolotl/llama-3_lora-8b.yml");
    let model = path("fixtures/peft/configs/llama-3-8b.json");
    let (json, stderr) = run(&[
        "estimate", "--recipe", &recipe, "--model", &model, "--format", "json",
    ]);
    let row = &json["rows"][0];
    // peft: r=32 on every Linear but lm_head, modules_to_save embed_tokens and lm_head.
    assert_eq!(row["trainable_params"], 1_134_559_232u64);
    // Hand arithmetic: block Linears in int8 (6,979,321,856 B) + one fp32 SCB per output row
    // (32 layers x 43,008 rows x 4 B), embeddings, lm_head and norms in fp32 (prepare for k-bit
    // training: 1,050,939,392 x 4 B), trainable in fp32 (1,134,559,232 x 4 B).
    assert_eq!(
        row["bytes"]["weights"],
        6_979_321_856u64 + 32 * 43_008 * 4 + 1_050_939_392 * 4 + 1_134_559_232 * 4
    );
    let s = &json["settings"];
    assert_eq!(s["batch"], 2);
    assert_eq!(s["seq"], 4096);
    assert_eq!(s["precision"], "amp-bf16");
    assert_eq!(s["base_dtype"], "fp32");
    assert_eq!(s["optimizer"], "adamw-8bit");
    // axolotl sets `use_reentrant: true` when the recipe gives no checkpointing kwargs.
    assert_eq!(s["checkpointing"], "reentrant");
    assert_eq!(s["attention"], "flash");
    assert_eq!(s["grad_accum"], 4);
    assert!(
        stderr.contains("recipe key not modelled: `lora_dropout` = 0.05"),
        "{stderr}"
    );
}

#[test]
fn flags_override_the_recipe() {
    let recipe = path("fixtures/recipes/torchtune/llama3_8B_lora_single_device.yaml");
    let (json, _) = run(&[
        "estimate",
        "--recipe",
        &recipe,
        "--batch",
        "1",
        "--seq",
        "512",
        "--optimizer",
        "sgd",
        "--precision",
        "amp-bf16",
        "--gpus",
        "4",
        "--zero",
        "3",
        "--format",
        "json",
    ]);
    let s = &json["settings"];
    assert_eq!(s["batch"], 1);
    assert_eq!(s["seq"], 512);
    assert_eq!(s["optimizer"], "sgd");
    assert_eq!(s["precision"], "amp-bf16");
    assert_eq!(s["gpus"], 4);
    assert_eq!(s["zero"], 3);
    // Kept from the recipe: dtype bf16, checkpointing, 8 accumulation steps.
    assert_eq!(s["base_dtype"], "bf16");
    assert_eq!(s["checkpointing"], "full");
    assert_eq!(s["grad_accum"], 8);
    // peft: r=8 on q, v, o, gate, up, down of Llama-3-8B.
    assert_eq!(json["rows"][0]["trainable_params"], 19_660_800u64);
    let (json, _) = run(&[
        "estimate",
        "--recipe",
        &recipe,
        "--regime",
        "lora:r=16,targets=q_proj+v_proj",
        "--format",
        "json",
    ]);
    assert_eq!(json["rows"][0]["regime"], "lora:r=16,targets=q_proj+v_proj");
}

/// The recipe's accumulation reaches the step timeline (the later micro-batches' backward runs
/// with the earlier gradients alive), and `--grad-accum` overrides it: LoRA r=8 on q, v, o, gate,
/// up, down of Llama-3-8B trains 19,660,800 parameters (peft), in bf16 (torchtune's dtype), so
/// the peak (in the loss or the backward) differs by their 2-byte gradients; the echo follows
/// each.
#[test]
fn the_recipes_accumulation_raises_the_peak_and_flags_override_it() {
    let recipe = path("fixtures/recipes/torchtune/llama3_8B_lora_single_device.yaml");
    let peak = |extra: &[&str]| {
        let mut args = vec!["estimate", "--recipe", &recipe, "--format", "json"];
        args.extend_from_slice(extra);
        let (json, _) = run(&args);
        let p = &json["rows"][0]["peak"];
        // Before the optimizer: the earlier micro-batches' gradients are alive (torchtune's
        // chunked loss moves the peak to the loss).
        assert!(
            ["loss", "backward"].contains(&p["phase"].as_str().unwrap()),
            "{p}"
        );
        (
            p["bytes"].as_u64().unwrap(),
            json["settings"]["grad_accum"].as_u64().unwrap(),
        )
    };
    let (accumulating, echoed) = peak(&[]);
    let (single, echoed_single) = peak(&["--grad-accum", "1"]);
    assert_eq!((echoed, echoed_single), (8, 1));
    assert_eq!(accumulating - single, 19_660_800 * 2);
    let (json, _) = run(&[
        "estimate",
        "--model",
        "llama-3-8b",
        "--regime",
        "lora:r=8",
        "--grad-accum",
        "4",
        "--loss",
        "chunked",
        "--optimizer",
        "adamw-fused",
        "--format",
        "json",
    ]);
    let s = &json["settings"];
    assert_eq!(
        (&s["grad_accum"], &s["loss"], &s["optimizer"]),
        (
            &Value::from(4),
            &Value::from("chunked"),
            &Value::from("adamw-fused")
        )
    );
}

#[test]
fn a_published_adapter_config_counts_its_layers() {
    let recipe = path("fixtures/recipes/peft/llama-2-7b_layers.json");
    let model = path("fixtures/peft/configs/llama-2-7b.json");
    let (json, stderr) = run(&[
        "estimate", "--recipe", &recipe, "--model", &model, "--format", "json",
    ]);
    // peft: r=8 on q, k, v, o of layers 28-31 only.
    assert_eq!(json["rows"][0]["trainable_params"], 1_048_576u64);
    assert!(stderr.contains("(peft)"), "{stderr}");
}

#[test]
fn settings_are_echoed_without_a_recipe_too() {
    let (json, _) = run(&[
        "estimate",
        "--model",
        "llama-3-8b",
        "--regime",
        "lora:r=8",
        "--format",
        "json",
    ]);
    let s = &json["settings"];
    assert_eq!(
        (
            s["batch"].clone(),
            s["seq"].clone(),
            s["precision"].clone(),
            s["base_dtype"].clone()
        ),
        (
            Value::from(1),
            Value::from(2048),
            Value::from("amp-bf16"),
            Value::from("bf16")
        )
    );
    let recipe = path("fixtures/recipes/llama-factory/train_lora_qwen3_lora_sft.yaml");
    let model = path("fixtures/peft/families-configs/qwen3-4b.json");
    let (json, _) = run(&[
        "fit", "--recipe", &recipe, "--model", &model, "--gpu", "a100-80g", "--format", "json",
    ]);
    // LLaMA-Factory's `use_reentrant_gc` defaults to true.
    assert_eq!(json["settings"]["checkpointing"], "reentrant");
    assert_eq!(json["settings"]["grad_accum"], 8);
}

#[test]
fn contradictions_exit_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("ftbudget-recipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let qlora = write("q.yml", "base_model: org/m\nadapter: qlora\nlora_r: 8\n");
    assert_eq!(
        error_of(&["estimate", "--recipe", &qlora]),
        "error: recipe key `adapter`: qlora needs load_in_4bit: true"
    );
    let optim = write(
        "o.yml",
        "base_model: org/m\nadapter: lora\nlora_r: 8\noptimizer: lion_8bit\n",
    );
    assert!(
        error_of(&["estimate", "--recipe", &optim])
            .starts_with("error: recipe key `optimizer`: `lion_8bit` is not accepted")
    );
    let none = write("n.json", "{\"peft_type\": \"LORA\", \"r\": 4}");
    assert_eq!(
        error_of(&["estimate", "--recipe", &none]),
        format!(
            "error: --recipe {none}: the recipe names no model ftbudget can read: pass --model"
        )
    );
    assert!(
        error_of(&["estimate", "--recipe", &qlora, "--recipe-format", "tune"])
            .contains("--recipe-format")
    );
    std::fs::remove_dir_all(&dir).ok();
}

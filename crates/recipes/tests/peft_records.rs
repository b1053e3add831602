//! fixtures/peft/recipes_counts.json (tools/peft-reference/recipes.py, peft 0.21.2): every
//! record's trainable and all-params counts reproduced exactly, for recipes read by
//! `ftbudget_recipes` (the regime comes from the recipe file) and for `layers=` and
//! `rank_pattern=` specs written here by hand from the record's LoraConfig arguments. The int8
//! storage is held to bitsandbytes' Int8Params bytes (fixtures/peft/int8_bytes.json).

use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The spec of each record that is not a recipe, from its LoraConfig arguments.
const SPECS: &[(&str, &str)] = &[
    (
        "llama-tiny-gqa|layers=0",
        "lora:r=8,targets=q_proj+v_proj,layers=0",
    ),
    (
        "llama-tiny-gqa|layers=1",
        "lora:r=4,targets=q_proj+k_proj+v_proj+o_proj+gate_proj+up_proj+down_proj,layers=1",
    ),
    (
        "llama-tiny-gqa|layers=0+1,lm_head",
        "lora:r=4,targets=q_proj+lm_head,layers=0+1",
    ),
    (
        "llama-tiny-gqa|rank_pattern",
        "lora:r=8,targets=q_proj+k_proj+v_proj+o_proj+gate_proj+up_proj+down_proj,rank_pattern=q_proj:16+v_proj:4",
    ),
    (
        "llama-tiny-gqa|rank_pattern layer",
        "lora:r=8,targets=q_proj+v_proj,rank_pattern=layers.0.self_attn.q_proj:32",
    ),
    (
        "llama-tiny-gqa|dora layers",
        "dora:r=8,targets=q_proj+o_proj,layers=1",
    ),
    (
        "llama-3-8b|layers=0+1+2",
        "lora:r=8,targets=q_proj+v_proj,layers=0+1+2",
    ),
    (
        "llama-3-8b|rank_pattern",
        "lora:r=16,targets=all-linear,rank_pattern=down_proj:64+layers.31.mlp.up_proj:2",
    ),
    (
        "llama-3-8b|layers+rank_pattern+modules_to_save",
        "lora:r=8,targets=q_proj+k_proj+v_proj+o_proj+gate_proj+up_proj+down_proj,layers=24+25+26+27+28+29+30+31,rank_pattern=o_proj:32,modules_to_save=lm_head",
    ),
];

#[test]
fn recipes_and_layered_specs_match_peft() {
    let text = std::fs::read_to_string(root().join("fixtures/peft/recipes_counts.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let registry = ftbudget_roster::registry().unwrap();
    let mut failures = Vec::new();
    let records = doc["records"].as_array().unwrap();
    for r in records {
        let id = r["id"].as_str().unwrap();
        let spec = match r["recipe"].as_str() {
            Some(recipe) => {
                let path = root().join("fixtures/recipes").join(recipe);
                ftbudget_recipes::read_recipe(&path, None).unwrap().regime
            }
            None => SPECS
                .iter()
                .find(|(k, _)| *k == id)
                .unwrap_or_else(|| panic!("no spec for {id}"))
                .1
                .to_string(),
        };
        let config = root()
            .join("fixtures/peft")
            .join(r["configs"].as_str().unwrap())
            .join(format!("{}.json", r["model"].as_str().unwrap()));
        let model = ftbudget_models::load(config.to_str().unwrap()).unwrap();
        assert_eq!(
            model.total_params(),
            r["base_params"].as_u64().unwrap(),
            "{id}"
        );
        let plan = registry
            .build(&spec)
            .map_err(|e| e.to_string())
            .and_then(|reg| reg.plan(&model).map_err(|e| e.to_string()));
        match plan {
            Ok(plan) => {
                let got = (plan.trainable_params().unwrap(), plan.all_params().unwrap());
                let want = (
                    r["trainable"].as_u64().unwrap(),
                    r["all_params"].as_u64().unwrap(),
                );
                if got != want {
                    failures.push(format!("{id} ({spec}): got {got:?}, peft {want:?}"));
                }
                assert_eq!(plan.recount(&model), *plan.totals(), "{id}: running totals");
            }
            Err(e) => failures.push(format!("{id} ({spec}): {e}")),
        }
    }
    assert!(records.len() >= 38);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn int8_storage_is_bitsandbytes_int8params() {
    let text = std::fs::read_to_string(root().join("fixtures/peft/int8_bytes.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    for r in doc["records"].as_array().unwrap() {
        let (rows, cols) = (r["out"].as_u64().unwrap(), r["in"].as_u64().unwrap());
        assert_eq!(
            ftbudget_core::int8_tensor_bytes(rows * cols, rows),
            r["bytes"].as_u64(),
            "{rows}x{cols}"
        );
    }
}

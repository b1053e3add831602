//! Every peft reference record in `fixtures/peft/` reproduced exactly: the model is loaded from
//! the config.json the generator used, the regime from its spec, and `trainable`, `all_params`
//! and the base count must equal `PeftModel.get_nb_trainable_parameters()` and
//! `model.num_parameters()`. Records where peft refused the combination must be refused too.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/peft")
}

struct Outcome {
    checked: usize,
    refused: usize,
    models: BTreeSet<String>,
    families: BTreeSet<String>,
}

fn check_file(file: &str, configs: &str) -> Outcome {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let registry = ftbudget_roster::registry().unwrap();
    let mut out = Outcome {
        checked: 0,
        refused: 0,
        models: BTreeSet::new(),
        families: BTreeSet::new(),
    };
    let mut failures = Vec::new();
    for record in doc["records"].as_array().unwrap() {
        let id = record["id"].as_str().unwrap();
        let model_name = record["model"].as_str().unwrap();
        let config = fixtures().join(configs).join(format!("{model_name}.json"));
        let model =
            ftbudget_models::load(config.to_str().unwrap()).unwrap_or_else(|e| panic!("{id}: {e}"));
        out.models.insert(model_name.to_string());
        out.families.insert(model.family.name().to_string());
        assert_eq!(
            model.total_params(),
            record["base_params"].as_u64().unwrap(),
            "{id}: base params"
        );
        let plan = registry
            .build(record["regime"].as_str().unwrap())
            .map_err(|e| e.to_string())
            .and_then(|r| r.plan(&model).map_err(|e| e.to_string()));
        match (record.get("error"), plan) {
            (Some(peft_error), Ok(_)) => failures.push(format!(
                "{id}: peft refused ({peft_error}) but ftbudget counted"
            )),
            (Some(_), Err(_)) => out.refused += 1,
            (None, Err(e)) => failures.push(format!("{id}: {e}")),
            (None, Ok(plan)) => {
                let trainable = plan.trainable_params().unwrap();
                let all = plan.all_params().unwrap();
                let want_t = record["trainable"].as_u64().unwrap();
                let want_a = record["all_params"].as_u64().unwrap();
                if (trainable, all) != (want_t, want_a) {
                    failures.push(format!(
                        "{id}: trainable {trainable} / all {all}, peft {want_t} / {want_a}"
                    ));
                }
                assert_eq!(plan.base_params().unwrap(), model.total_params(), "{id}");
                out.checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    out
}

#[test]
fn generated_records_match_peft_exactly() {
    let out = check_file("generated_counts.json", "configs");
    eprintln!("checked {} refused {}", out.checked, out.refused);
    assert!(out.checked >= 400, "only {} records checked", out.checked);
    assert!(out.refused >= 10, "only {} refusals checked", out.refused);
    for family in [
        "llama", "mistral", "qwen2", "gemma", "gpt2", "phi3", "mixtral",
    ] {
        assert!(out.families.contains(family), "no {family} record");
    }
}

#[test]
fn shared_records_match_peft_exactly() {
    let out = check_file("shared_counts.json", "shared-configs");
    assert_eq!(out.checked, 191);
    assert_eq!(out.models.len(), 9);
}

//! Every PEFT-method regime held to peft 0.21.2 (`fixtures/peft/methods_counts.json`, written by
//! `tools/peft-reference/methods.py`): for each record, the model is read from the committed
//! config.json, the regime is built from the record's spec, and `trainable` and `all_params`
//! must equal `PeftModel.get_nb_trainable_parameters()`; a record of a refusal must be refused.

use serde_json::Value;

const RECORDS: &str = include_str!("../../../fixtures/peft/methods_counts.json");

fn records() -> Vec<Value> {
    let json: Value = serde_json::from_str(RECORDS).unwrap();
    json["records"].as_array().unwrap().clone()
}

/// The spec ftbudget evaluates for a record. peft's BOFT forces `boft_n_butterfly_factor` to 1
/// when its CUDA extension (`fbd_cuda`) cannot be built, as on the CPU machine that recorded
/// the fixtures; ftbudget follows the config as written (the extension's path), so a BOFT
/// record is compared with the factor peft actually used.
fn effective_spec(spec: &str) -> String {
    if spec.starts_with("boft") {
        let mut out = spec.to_string();
        for f in [
            "n_butterfly_factor=2",
            "n_butterfly_factor=3",
            "n_butterfly_factor=4",
        ] {
            out = out.replace(f, "n_butterfly_factor=1");
        }
        if out == "boft" {
            return "boft:n_butterfly_factor=1".into();
        }
        return out;
    }
    spec.to_string()
}

#[test]
fn every_method_matches_peft() {
    let registry = ftbudget_roster::registry().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for record in records() {
        let id = record["id"].as_str().unwrap();
        let config = record["config"].as_str().unwrap();
        let path = format!(
            "{}/../../fixtures/peft/{config}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let model =
            ftbudget_models::from_config_json(&text, record["model"].as_str().unwrap()).unwrap();
        let spec = effective_spec(record["regime"].as_str().unwrap());
        let planned = registry
            .build(&spec)
            .map_err(|e| e.to_string())
            .and_then(|regime| regime.plan(&model).map_err(|e| e.to_string()));
        checked += 1;
        match (&record["error"], planned) {
            (Value::String(peft), Ok(_)) => failures.push(format!("{id}: peft refuses ({peft})")),
            (Value::String(_), Err(_)) => {}
            (_, Err(e)) => failures.push(format!("{id}: {e}")),
            (_, Ok(plan)) => {
                let ours = (plan.trainable_params().unwrap(), plan.all_params().unwrap());
                // A published model's record is made on the meta device, where peft leaves
                // AdaLoRA's `ranknum` trainable; `trainable_on_device` is the count on a device.
                let trainable = record
                    .get("trainable_on_device")
                    .unwrap_or(&record["trainable"]);
                let peft = (
                    trainable.as_u64().unwrap(),
                    record["all_params"].as_u64().unwrap(),
                );
                if ours != peft {
                    failures.push(format!("{id}: ftbudget {ours:?}, peft {peft:?}"));
                }
                assert_eq!(*plan.totals(), plan.recount(&model), "{id}");
            }
        }
    }
    assert!(checked > 200, "{checked} records");
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Refusals carry peft's reason: LoHa, LoKr, OFT and BOFT on GPT-2's Conv1D.
#[test]
fn conv1d_refusals_quote_peft() {
    let registry = ftbudget_roster::registry().unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/../../fixtures/peft/configs/gpt2-tiny.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let model = ftbudget_models::from_config_json(&text, "gpt2-tiny").unwrap();
    for record in records() {
        let (Some(peft), "gpt2-tiny") =
            (record["error"].as_str(), record["model"].as_str().unwrap())
        else {
            continue;
        };
        let spec = effective_spec(record["regime"].as_str().unwrap());
        let err = registry
            .build(&spec)
            .unwrap()
            .plan(&model)
            .unwrap_err()
            .to_string();
        // peft's message after the exception type.
        let reason = peft.split_once(": ").unwrap().1;
        assert!(err.contains(reason), "{spec}: `{err}` lacks `{reason}`");
    }
}

//! A small real safetensors file (header and data, written with the `safetensors` crate) read back
//! as an inventory: its counts must equal the peft reference records for the same model built by
//! transformers from its config (fixtures/peft/generated_counts.json).

use safetensors::{Dtype, tensor::TensorView};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("safetensors-inventory");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Write `tensors` (name, shape) as f32 with real data.
fn write(path: &Path, tensors: &[(String, Vec<usize>)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            (0..n)
                .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

fn peft_record(id: &str) -> (u64, u64, u64) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/peft/generated_counts.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let r = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no record {id}"));
    (
        r["trainable"].as_u64().unwrap(),
        r["all_params"].as_u64().unwrap(),
        r["base_params"].as_u64().unwrap(),
    )
}

fn counts(model: &ftbudget_core::ModelShape, spec: &str) -> (u64, u64, u64) {
    let plan = ftbudget_roster::registry()
        .unwrap()
        .build(spec)
        .unwrap()
        .plan(model)
        .unwrap();
    (
        plan.trainable_params().unwrap(),
        plan.all_params().unwrap(),
        plan.base_params().unwrap(),
    )
}

/// transformers' LlamaForCausalLM tensors for fixtures/peft/configs/llama-tiny-gqa.json.
fn llama_tiny_gqa() -> Vec<(String, Vec<usize>)> {
    let (h, i, kv, vocab) = (64, 96, 32, 100);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            t.push((format!("{p}.{name}"), shape));
        }
    }
    t.push(("model.norm.weight".into(), vec![h]));
    t.push(("lm_head.weight".into(), vec![vocab, h]));
    t
}

/// GPT2LMHeadModel tensors for fixtures/peft/configs/gpt2-tiny.json (tied: no lm_head tensor).
fn gpt2_tiny() -> Vec<(String, Vec<usize>)> {
    gpt2_tensors(64, 96, 100, 32, 2)
}

/// GPT2LMHeadModel tensors (Conv1D `[in, out]` weights, tied head) of the given sizes.
fn gpt2_tensors(
    h: usize,
    inner: usize,
    vocab: usize,
    pos: usize,
    layers: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("transformer.wte.weight".to_string(), vec![vocab, h]),
        ("transformer.wpe.weight".to_string(), vec![pos, h]),
    ];
    for l in 0..layers {
        let p = format!("transformer.h.{l}");
        for (name, shape) in [
            ("ln_1.weight", vec![h]),
            ("ln_1.bias", vec![h]),
            ("attn.c_attn.weight", vec![h, 3 * h]),
            ("attn.c_attn.bias", vec![3 * h]),
            ("attn.c_proj.weight", vec![h, h]),
            ("attn.c_proj.bias", vec![h]),
            ("ln_2.weight", vec![h]),
            ("ln_2.bias", vec![h]),
            ("mlp.c_fc.weight", vec![h, inner]),
            ("mlp.c_fc.bias", vec![inner]),
            ("mlp.c_proj.weight", vec![inner, h]),
            ("mlp.c_proj.bias", vec![h]),
        ] {
            t.push((format!("{p}.{name}"), shape));
        }
    }
    t.push(("transformer.ln_f.weight".into(), vec![h]));
    t.push(("transformer.ln_f.bias".into(), vec![h]));
    t
}

#[test]
fn llama_inventory_counts_like_peft() {
    let path = tmp("llama-tiny-gqa.safetensors");
    let tensors = llama_tiny_gqa();
    write(&path, &tensors);
    let inventory = ftbudget_models::inventory::read_file(&path).unwrap();
    assert_eq!(inventory.len(), tensors.len());
    let q = inventory
        .iter()
        .find(|t| t.name == "model.layers.1.self_attn.k_proj.weight")
        .unwrap();
    assert_eq!((q.shape.clone(), q.dtype.as_str()), (vec![32, 64], "F32"));
    let model = ftbudget_models::load(path.to_str().unwrap()).unwrap();
    for spec in [
        "lora:r=8,targets=q_proj+v_proj",
        "lora:r=16",
        "lora:r=8,targets=mlp",
        "dora:r=8",
        "lora:r=8,targets=q_proj+v_proj,modules_to_save=lm_head",
    ] {
        assert_eq!(
            counts(&model, spec),
            peft_record(&format!("llama-tiny-gqa|{spec}")),
            "{spec}"
        );
    }
}

#[test]
fn gpt2_inventory_reads_conv1d_and_tied_head_like_peft() {
    let path = tmp("gpt2-tiny.safetensors");
    write(&path, &gpt2_tiny());
    let model = ftbudget_models::load(path.to_str().unwrap()).unwrap();
    for spec in [
        "lora:r=8,targets=c_attn",
        "lora:r=8",
        "lora:r=8,bias=all",
        "lora:r=8,bias=lora_only",
        "lora:r=8,targets=c_attn,modules_to_save=lm_head",
        "lora:r=8,targets=c_attn+c_proj",
    ] {
        assert_eq!(
            counts(&model, spec),
            peft_record(&format!("gpt2-tiny|{spec}")),
            "{spec}"
        );
    }
}

#[test]
fn sharded_folder_reads_every_shard() {
    let dir = tmp("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    let tensors = llama_tiny_gqa();
    let (a, b) = tensors.split_at(7);
    write(&dir.join("model-00001-of-00002.safetensors"), a);
    write(&dir.join("model-00002-of-00002.safetensors"), b);
    let weight_map: serde_json::Map<String, Value> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let shard = if i < 7 { 1 } else { 2 };
            (
                name.clone(),
                Value::from(format!("model-0000{shard}-of-00002.safetensors")),
            )
        })
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = ftbudget_models::load(dir.to_str().unwrap()).unwrap();
    assert_eq!(
        counts(&model, "lora:r=16"),
        peft_record("llama-tiny-gqa|lora:r=16")
    );
}

#[test]
fn truncated_file_is_an_error_not_a_read_of_data() {
    let path = tmp("truncated.safetensors");
    write(&path, &llama_tiny_gqa());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let err = ftbudget_models::load(path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&path, &bytes[..20]).unwrap();
    let err = ftbudget_models::load(path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("header length"), "{err}");
}

/// A Mixtral checkpoint as stored on the Hub (transformers-4 names, one Linear per expert) for
/// fixtures/peft/configs/mixtral-tiny.json: counts must match what peft does on transformers 5.
fn mixtral_tiny_v4() -> Vec<(String, Vec<usize>)> {
    let (h, i, kv, vocab, experts) = (64, 96, 32, 100, 4);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("block_sparse_moe.gate.weight", vec![experts, h]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            t.push((format!("{p}.{name}"), shape));
        }
        for e in 0..experts {
            for (name, shape) in [("w1", vec![i, h]), ("w2", vec![h, i]), ("w3", vec![i, h])] {
                t.push((
                    format!("{p}.block_sparse_moe.experts.{e}.{name}.weight"),
                    shape,
                ));
            }
        }
    }
    t.push(("model.norm.weight".into(), vec![h]));
    t.push(("lm_head.weight".into(), vec![vocab, h]));
    t
}

#[test]
fn mixtral_v4_checkpoint_counts_like_peft_on_transformers_5() {
    let path = tmp("mixtral-tiny.safetensors");
    write(&path, &mixtral_tiny_v4());
    let model = ftbudget_models::load(path.to_str().unwrap()).unwrap();
    assert_eq!(
        (model.dims.layers, model.dims.hidden, model.dims.vocab),
        (2, 64, 100)
    );
    for spec in [
        "lora:r=8",
        "lora:r=8,targets=mlp",
        "lora:r=8,targets=w1+w3",
        "lora:r=8,targets=gate",
        "lora:r=8,targets=q_proj+gate+w2",
        "dora:r=8,targets=q_proj+v_proj",
    ] {
        assert_eq!(
            counts(&model, spec),
            peft_record(&format!("mixtral-tiny|{spec}")),
            "{spec}"
        );
    }
    let registry = ftbudget_roster::registry().unwrap();
    for refused in ["lora:r=8,targets=w1", "dora:r=8"] {
        assert!(
            registry.build(refused).unwrap().plan(&model).is_err(),
            "{refused}"
        );
    }
}

/// GPT-2 with `n_embd` 128, 2 heads of 64, `n_positions` 48 (issue 16, item 2): a checkpoint read
/// from its headers alone can be estimated (the position table comes from `wpe`), and its
/// attention activations equal those of the same model read from its config.json, because
/// GPT-2's head dimension (64) is assumed and stated rather than one head of `n_embd`.
#[test]
fn gpt2_headers_alone_estimate_like_the_config() {
    let t = gpt2_tensors(128, 512, 100, 48, 1);
    let path = tmp("gpt2-h128.safetensors");
    write(&path, &t);
    let loaded = ftbudget_models::load_model(path.to_str().unwrap()).unwrap();
    let headers = loaded.shape;
    assert_eq!(headers.position_limit(), Some(48));
    assert_eq!((headers.dims.heads, headers.dims.head_dim), (2, 64));
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("assumed head_dim 64")),
        "{:?}",
        loaded.notes
    );
    assert!(headers.check_seq("--seq", 48).is_ok());
    assert!(headers.check_seq("--seq", 49).is_err());
    let config = ftbudget_models::from_config_json(
        r#"{"model_type":"gpt2","n_embd":128,"n_head":2,"n_layer":1,"n_inner":512,"vocab_size":100,"n_positions":48}"#,
        "gpt2-h128",
    )
    .unwrap();
    assert_eq!(headers.total_params(), config.total_params());
    let registry = ftbudget_roster::registry().unwrap();
    let mut settings = ftbudget_core::MemorySettings::pytorch();
    settings.activations.attention = ftbudget_core::AttentionImpl::Eager;
    settings.workload.seq = 48;
    for spec in ["full-ft", "lora:r=8"] {
        let regime = registry.build(spec).unwrap();
        let estimate = |m: &ftbudget_core::ModelShape| {
            ftbudget_core::estimate_memory(m, &regime.plan(m).unwrap(), &settings).unwrap()
        };
        assert_eq!(estimate(&headers), estimate(&config), "{spec}");
    }
}

/// Issue 9, item 5: a `model_type` no family describes, with safetensors headers beside its
/// config, is counted from the headers (exactly peft's llama-tiny-gqa figures) with a note that
/// says so; tensors that are not parameters (FP8 scales, a routing-bias buffer) are counted apart.
#[test]
fn unknown_model_type_with_headers_counts_from_the_headers() {
    let dir = tmp("unknown-arch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "brand_new_decoder", "hidden_size": 64}"#,
    )
    .unwrap();
    let mut tensors = llama_tiny_gqa();
    tensors.push((
        "model.layers.0.self_attn.q_proj.weight_scale_inv".into(),
        vec![1, 1],
    ));
    tensors.push((
        "model.layers.0.mlp.gate.e_score_correction_bias".into(),
        vec![4],
    ));
    write(&dir.join("model.safetensors"), &tensors);
    let loaded = ftbudget_models::load_model(dir.to_str().unwrap()).unwrap();
    assert!(
        loaded.notes[0].contains("`brand_new_decoder` has no family description"),
        "{:?}",
        loaded.notes
    );
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("1 tensors (1 elements) of FP8 scale tensors")),
        "{:?}",
        loaded.notes
    );
    assert_eq!(
        loaded.shape.block.recipe,
        ftbudget_core::ActivationRecipe::Generic
    );
    assert_eq!(
        counts(&loaded.shape, "lora:r=8,targets=q_proj+v_proj"),
        peft_record("llama-tiny-gqa|lora:r=8,targets=q_proj+v_proj")
    );
    // Without headers the same config is a one-line error listing the supported types.
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = ftbudget_models::load(dir.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("unsupported model_type `brand_new_decoder` (supported: llama"),
        "{err}"
    );
}

/// DeepSeek-V3's checkpoint holds a multi-token-prediction layer past `num_hidden_layers`
/// (`model.layers.61`): its tensors are set apart, not counted as parameters.
#[test]
fn layers_beyond_the_config_are_set_apart() {
    let entry = |name: &str, n: u64| ftbudget_models::inventory::TensorEntry {
        name: name.into(),
        shape: vec![n],
        dtype: "BF16".into(),
    };
    let tensors = vec![
        entry("model.embed_tokens.weight", 10),
        entry("model.layers.0.input_layernorm.weight", 4),
        entry("model.layers.1.input_layernorm.weight", 4),
        entry("model.layers.2.input_layernorm.weight", 4),
        entry("model.layers.2.eh_proj.weight", 16),
    ];
    let (kept, dropped, elements) = ftbudget_models::inventory::split_extra_layers(tensors, 2);
    assert_eq!(kept.len(), 3);
    assert_eq!((dropped, elements), (2, 20));
}

//! Malformed input never panics and fails with one line naming the field.

use ftbudget_models::{from_config_json, inventory};
use proptest::prelude::*;
use std::path::Path;

fn err(text: &str) -> String {
    let e = from_config_json(text, "t").unwrap_err().to_string();
    assert!(!e.contains('\n'), "multi-line error: {e}");
    e
}

#[test]
fn config_errors_name_the_field() {
    assert!(err("{\"model_type\": \"llama\", ").contains("malformed JSON"));
    assert!(err("[1, 2]").contains("must be a JSON object"));
    assert!(err("{}").contains("model_type"));
    let e = err(r#"{"model_type":"bert"}"#);
    assert!(
        e.contains("`bert`") && e.contains("qwen3") && e.contains("deepseek_v3"),
        "{e}"
    );
    assert!(
        err(r#"{"model_type":"llama","hidden_size":0}"#)
            .contains("`hidden_size` must be at least 1")
    );
    assert!(
        err(r#"{"model_type":"llama","num_hidden_layers":-2}"#)
            .contains("`num_hidden_layers` must be a positive integer (got -2)")
    );
    assert!(err(r#"{"model_type":"gpt2","n_head":0}"#).contains("`n_head`"));
    assert!(err(r#"{"model_type":"llama","vocab_size":"32000"}"#).contains("`vocab_size`"));
    assert!(
        err(r#"{"model_type":"llama","tie_word_embeddings":1}"#).contains("`tie_word_embeddings`")
    );
    assert!(
        err(r#"{"model_type":"llama","hidden_size":100,"num_attention_heads":3}"#)
            .starts_with("num_attention_heads: 3 does not divide hidden_size 100")
    );
    assert!(
        err(r#"{"model_type":"mistral","num_attention_heads":32,"num_key_value_heads":5}"#)
            .starts_with("num_key_value_heads")
    );
    assert!(err(r#"{"model_type":"llama","hidden_size":4294967296,"vocab_size":4294967296,"num_attention_heads":1}"#)
        .contains("overflows"));
    assert!(
        err(r#"{"model_type":"mixtral","num_local_experts":2,"num_experts_per_tok":3}"#)
            .starts_with("num_experts_per_tok")
    );
    // head_dim given explicitly: heads need not divide hidden_size (Gemma-style).
    assert!(
        from_config_json(
            r#"{"model_type":"llama","hidden_size":100,"num_attention_heads":3,"head_dim":40}"#,
            "t"
        )
        .is_ok()
    );
}

#[test]
fn defaults_are_the_library_defaults() {
    // An empty llama config is LlamaConfig(): 6,738,415,616 params (Llama-2-7B shape).
    let m = from_config_json(r#"{"model_type":"llama"}"#, "t").unwrap();
    assert_eq!(m.total_params(), 6_738_415_616);
    // GPT2Config() is GPT-2 small: 124,439,808.
    let m = from_config_json(r#"{"model_type":"gpt2"}"#, "t").unwrap();
    assert_eq!(m.total_params(), 124_439_808);
}

#[test]
fn absent_and_null_kv_heads_follow_transformers() {
    // MistralConfig(): num_key_value_heads defaults to 8, giving Mistral 7B's 7,241,732,096.
    let absent = from_config_json(r#"{"model_type":"mistral"}"#, "t").unwrap();
    assert_eq!(absent.total_params(), 7_241_732_096);
    // LlamaConfig(num_attention_heads=8, num_key_value_heads=None).num_key_value_heads == 8.
    let null = from_config_json(
        r#"{"model_type":"llama","num_attention_heads":8,"num_key_value_heads":null}"#,
        "t",
    )
    .unwrap();
    assert_eq!(null.dims.kv_heads, 8);
}

#[test]
fn unknown_target_lists_the_module_names() {
    let model = ftbudget_models::load("mixtral-8x7b").unwrap();
    let registry = ftbudget_roster::registry().unwrap();
    let e = registry
        .build("lora:targets=w4")
        .unwrap()
        .plan(&model)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q_proj, k_proj, v_proj, o_proj, gate, w1, w3, w2, lm_head"),
        "{e}"
    );
    let e = registry
        .build("lora:targets=w1")
        .unwrap()
        .plan(&model)
        .unwrap_err()
        .to_string();
    assert!(e.contains("w1 and w3 are fused"), "{e}");
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (0u64..5000).prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("llama"),
            Just("gpt2"),
            Just("mixtral"),
            Just("phi3"),
            Just("gemma"),
            Just("qwen2"),
            Just("mistral")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 24, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model_type".to_string()),
                    Just("hidden_size".to_string()),
                    Just("num_hidden_layers".to_string()),
                    Just("num_attention_heads".to_string()),
                    Just("num_key_value_heads".to_string()),
                    Just("head_dim".to_string()),
                    Just("intermediate_size".to_string()),
                    Just("vocab_size".to_string()),
                    Just("n_embd".to_string()),
                    Just("n_inner".to_string()),
                    Just("num_local_experts".to_string()),
                    Just("tie_word_embeddings".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..10,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_parser_never_panics(value in any_json()) {
        let _ = from_config_json(&value.to_string(), "fuzz");
    }

    #[test]
    fn config_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = from_config_json(&String::from_utf8_lossy(&bytes), "fuzz");
    }

    #[test]
    fn header_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), len in any::<u64>()) {
        let _ = inventory::parse_header(Path::new("fuzz"), &bytes, len);
    }

    #[test]
    fn header_parser_never_panics_on_json(value in any_json(), len in 0u64..10_000) {
        let text = value.to_string();
        if let Ok(tensors) = inventory::parse_header(Path::new("fuzz"), text.as_bytes(), len) {
            let _ = inventory::shape_from_inventory("fuzz", &tensors);
        }
    }

    #[test]
    fn random_tensor_headers_never_panic(
        shapes in prop::collection::vec((prop::collection::vec(0usize..5000, 0..4), 0u8..3), 0..6),
    ) {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (i, (shape, kind)) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let name = match kind {
                0 => format!("model.layers.{i}.self_attn.q_proj.weight"),
                1 => format!("model.layers.{i}.input_layernorm.weight"),
                _ => "model.embed_tokens.weight".to_string(),
            };
            header.insert(name, serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}));
            offset += 4 * n;
        }
        let text = serde_json::Value::Object(header).to_string();
        let len = (text.len() + 8 + offset) as u64;
        if let Ok(tensors) = inventory::parse_header(Path::new("fuzz"), text.as_bytes(), len) {
            let _ = inventory::shape_from_inventory("fuzz", &tensors);
        }
    }
}

//! Which layers use sliding-window attention, against transformers 5.24: each expectation is
//! `config.sliding_window` and the count of `"sliding_attention"` in `config.layer_types` of
//! `AutoConfig.for_model(model_type, **fields)` (or, for the model types without `layer_types`,
//! the layers whose sdpa call received a sliding-window mask, counted with
//! `saved_tensors_hooks`).

use ftbudget_core::SlidingWindow;
use ftbudget_models::from_config_json;

fn sliding(config: &str) -> Option<SlidingWindow> {
    from_config_json(config, "t").unwrap().block.sliding_window
}

fn window(window: u64, layers: u64) -> Option<SlidingWindow> {
    Some(SlidingWindow { window, layers })
}

#[test]
fn config_class_rules_match_transformers() {
    let cases = [
        // Gemma2Config(): every other layer from the first, window 4096.
        (
            r#"{"model_type":"gemma2","num_hidden_layers":8}"#,
            window(4096, 4),
        ),
        // Gemma3TextConfig(sliding_window=512): five sliding layers, then a global one.
        (
            r#"{"model_type":"gemma3_text","num_hidden_layers":8,"sliding_window":512}"#,
            window(512, 7),
        ),
        (
            r#"{"model_type":"gpt_oss","num_hidden_layers":8}"#,
            window(128, 4),
        ),
        (
            r#"{"model_type":"olmo3","num_hidden_layers":8}"#,
            window(4096, 6),
        ),
        (
            r#"{"model_type":"cohere2","num_hidden_layers":8}"#,
            window(4096, 6),
        ),
        (
            r#"{"model_type":"exaone4","num_hidden_layers":8}"#,
            window(4096, 6),
        ),
        (
            r#"{"model_type":"ministral","num_hidden_layers":8}"#,
            window(4096, 8),
        ),
        // MistralConfig(): window 4096 on every layer (both layers of a 2-layer model saved a
        // mask).
        (
            r#"{"model_type":"mistral","num_hidden_layers":2}"#,
            window(4096, 2),
        ),
        (
            r#"{"model_type":"mistral","num_hidden_layers":2,"sliding_window":null}"#,
            None,
        ),
        (r#"{"model_type":"mixtral","num_hidden_layers":2}"#, None),
        (r#"{"model_type":"phi3","num_hidden_layers":2}"#, None),
        (
            r#"{"model_type":"phi3","num_hidden_layers":2,"sliding_window":16}"#,
            window(16, 2),
        ),
        // Qwen2: only with use_sliding_window, from max_window_layers on.
        (
            r#"{"model_type":"qwen2","num_hidden_layers":4,"sliding_window":4096}"#,
            None,
        ),
        (
            r#"{"model_type":"qwen2","num_hidden_layers":4,"sliding_window":4096,"use_sliding_window":true,"max_window_layers":2}"#,
            window(4096, 2),
        ),
        (
            r#"{"model_type":"qwen2_moe","num_hidden_layers":4,"sliding_window":0}"#,
            None,
        ),
        (
            r#"{"model_type":"llama","num_hidden_layers":4,"sliding_window":16}"#,
            None,
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(sliding(config), expected, "{config}");
    }
}

#[test]
fn layer_types_are_counted_and_checked() {
    assert_eq!(
        sliding(
            r#"{"model_type":"gemma3_text","num_hidden_layers":3,"sliding_window":16,"layer_types":["sliding_attention","sliding_attention","full_attention"]}"#
        ),
        window(16, 2)
    );
    let e = from_config_json(
        r#"{"model_type":"gemma3_text","num_hidden_layers":3,"layer_types":["full_attention"]}"#,
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("layer_types") && !e.contains('\n'), "{e}");
}

/// The presets carry their published windows: Phi-3-mini-4k's 2047 on all 32 layers, Gemma 3
/// 1B's 512 on 22 of 26 layers, Gemma 3 27B's 1024 on 52 of 62.
#[test]
fn presets_carry_their_windows() {
    let preset = |name| ftbudget_models::load(name).unwrap().block.sliding_window;
    assert_eq!(preset("phi-3-mini"), window(2047, 32));
    assert_eq!(preset("gemma-3-1b"), window(512, 22));
    assert_eq!(preset("gemma-3-27b"), window(1024, 52));
    assert_eq!(preset("mistral-small-3.1-24b"), None);
    assert_eq!(preset("llama-3-8b"), None);
}

//! Built-in model presets, written as the count-relevant fields of each model's Hugging Face
//! `config.json` and read by the same parser as user files. Each is checked against its published
//! parameter count in tests.

use ftbudget_core::TransformerSpec;

/// (name, config.json fields). Display order.
const PRESETS: &[(&str, &str)] = &[
    ("minigpt", ""),
    ("gpt2", r#"{"model_type":"gpt2"}"#),
    (
        "gpt2-medium",
        r#"{"model_type":"gpt2","n_embd":1024,"n_layer":24,"n_head":16}"#,
    ),
    (
        "gpt2-large",
        r#"{"model_type":"gpt2","n_embd":1280,"n_layer":36,"n_head":20}"#,
    ),
    (
        "gpt2-xl",
        r#"{"model_type":"gpt2","n_embd":1600,"n_layer":48,"n_head":25}"#,
    ),
    (
        "llama-2-7b",
        r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,"max_position_embeddings":4096}"#,
    ),
    (
        "llama-2-13b",
        r#"{"model_type":"llama","hidden_size":5120,"intermediate_size":13824,"num_hidden_layers":40,"num_attention_heads":40,"num_key_value_heads":40,"vocab_size":32000,"max_position_embeddings":4096}"#,
    ),
    (
        "llama-2-70b",
        r#"{"model_type":"llama","hidden_size":8192,"intermediate_size":28672,"num_hidden_layers":80,"num_attention_heads":64,"num_key_value_heads":8,"vocab_size":32000,"max_position_embeddings":4096}"#,
    ),
    (
        "llama-3-8b",
        r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":8192}"#,
    ),
    (
        "llama-3.1-70b",
        r#"{"model_type":"llama","hidden_size":8192,"intermediate_size":28672,"num_hidden_layers":80,"num_attention_heads":64,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":131072}"#,
    ),
    (
        "mistral-7b",
        r#"{"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,"max_position_embeddings":32768}"#,
    ),
    (
        "qwen2-7b",
        r#"{"model_type":"qwen2","hidden_size":3584,"intermediate_size":18944,"num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,"vocab_size":152064,"max_position_embeddings":131072}"#,
    ),
    (
        "gemma-2b",
        r#"{"model_type":"gemma","hidden_size":2048,"intermediate_size":16384,"num_hidden_layers":18,"num_attention_heads":8,"num_key_value_heads":1,"head_dim":256,"vocab_size":256000}"#,
    ),
    (
        "phi-3-mini",
        r#"{"model_type":"phi3","hidden_size":3072,"intermediate_size":8192,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32064,"max_position_embeddings":4096}"#,
    ),
    (
        "mixtral-8x7b",
        r#"{"model_type":"mixtral","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,"num_local_experts":8,"num_experts_per_tok":2,"max_position_embeddings":32768}"#,
    ),
];

/// Preset names, in display order.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|(name, _)| *name).collect()
}

pub fn spec(name: &str) -> Option<TransformerSpec> {
    let (name, config) = PRESETS.iter().find(|(n, _)| *n == name)?;
    if *name == "minigpt" {
        return Some(TransformerSpec::minigpt());
    }
    // The preset texts are fixed and tested to parse; a failure here is a bug in this table.
    crate::config::spec_from_config_json(config, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published totals: GPT-2 (OpenAI/HF model cards, tied lm_head counted once), Llama 2 and 3
    /// (Meta model cards / `num_parameters()` of the HF checkpoints), Mistral 7B, Qwen2-7B,
    /// Gemma 2B, Phi-3-mini and Mixtral 8x7B (`num_parameters()` of their HF checkpoints).
    #[test]
    fn presets_have_their_published_parameter_counts() {
        let published: &[(&str, u64)] = &[
            ("gpt2", 124_439_808),
            ("gpt2-medium", 354_823_168),
            ("gpt2-large", 774_030_080),
            ("gpt2-xl", 1_557_611_200),
            ("llama-2-7b", 6_738_415_616),
            ("llama-2-13b", 13_015_864_320),
            ("llama-2-70b", 68_976_648_192),
            ("llama-3-8b", 8_030_261_248),
            ("llama-3.1-70b", 70_553_706_496),
            ("mistral-7b", 7_241_732_096),
            ("qwen2-7b", 7_615_616_512),
            ("gemma-2b", 2_506_172_416),
            ("phi-3-mini", 3_821_079_552),
            ("mixtral-8x7b", 46_702_792_704),
        ];
        for (name, count) in published {
            let shape = spec(name).expect(name).build().expect(name);
            assert_eq!(shape.total_params(), *count, "{name}");
        }
        assert_eq!(names().len(), published.len() + 1);
        for name in names() {
            assert!(spec(name).is_some(), "{name}");
        }
    }
}

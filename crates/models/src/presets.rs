//! Built-in model presets, written as the count-relevant fields of each model's Hugging Face
//! `config.json` and read by the same parser as user files. Each is checked against its published
//! parameter count in tests. Sliding-window fields are the published configs' where they differ
//! from the config class default: Phi-3-mini-4k 2047, Gemma 3 1B 512 and 4B to 27B 1024,
//! StarCoder2 4096, Ministral 8B 32768, Mistral Small 3.1 none.

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
        r#"{"model_type":"phi3","hidden_size":3072,"intermediate_size":8192,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32064,"max_position_embeddings":4096,"sliding_window":2047}"#,
    ),
    (
        "mixtral-8x7b",
        r#"{"model_type":"mixtral","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,"num_local_experts":8,"num_experts_per_tok":2,"max_position_embeddings":32768}"#,
    ),
    (
        "qwen3-0.6b",
        r#"{"model_type":"qwen3","hidden_size":1024,"intermediate_size":3072,"num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":true,"attention_bias":false}"#,
    ),
    (
        "qwen3-4b",
        r#"{"model_type":"qwen3","hidden_size":2560,"intermediate_size":9728,"num_hidden_layers":36,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":true,"attention_bias":false}"#,
    ),
    (
        "qwen3-8b",
        r#"{"model_type":"qwen3","hidden_size":4096,"intermediate_size":12288,"num_hidden_layers":36,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
    (
        "qwen3-14b",
        r#"{"model_type":"qwen3","hidden_size":5120,"intermediate_size":17408,"num_hidden_layers":40,"num_attention_heads":40,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
    (
        "qwen3-32b",
        r#"{"model_type":"qwen3","hidden_size":5120,"intermediate_size":25600,"num_hidden_layers":64,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
    (
        "qwen3-30b-a3b",
        r#"{"model_type":"qwen3_moe","hidden_size":2048,"intermediate_size":6144,"num_hidden_layers":48,"num_attention_heads":32,"num_key_value_heads":4,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false,"attention_bias":false,"moe_intermediate_size":768,"num_local_experts":128,"num_experts_per_tok":8,"decoder_sparse_step":1,"mlp_only_layers":[]}"#,
    ),
    (
        "gemma-2-9b",
        r#"{"model_type":"gemma2","hidden_size":3584,"intermediate_size":14336,"num_hidden_layers":42,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":256,"vocab_size":256000,"max_position_embeddings":8192,"tie_word_embeddings":true,"attention_bias":false,"attn_logit_softcapping":50.0}"#,
    ),
    (
        "gemma-3-1b",
        r#"{"model_type":"gemma3_text","hidden_size":1152,"intermediate_size":6912,"num_hidden_layers":26,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":256,"vocab_size":262144,"max_position_embeddings":32768,"tie_word_embeddings":true,"attention_bias":false,"attn_logit_softcapping":null,"sliding_window":512}"#,
    ),
    (
        "gemma-3-4b",
        r#"{"model_type":"gemma3","tie_word_embeddings":true,"text_config":{"model_type":"gemma3_text","hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":34,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,"vocab_size":262208,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"attn_logit_softcapping":null,"sliding_window":1024}}"#,
    ),
    (
        "gemma-3-12b",
        r#"{"model_type":"gemma3","tie_word_embeddings":true,"text_config":{"model_type":"gemma3_text","hidden_size":3840,"intermediate_size":15360,"num_hidden_layers":48,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":256,"vocab_size":262208,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"attn_logit_softcapping":null,"sliding_window":1024}}"#,
    ),
    (
        "gemma-3-27b",
        r#"{"model_type":"gemma3","tie_word_embeddings":true,"text_config":{"model_type":"gemma3_text","hidden_size":5376,"intermediate_size":21504,"num_hidden_layers":62,"num_attention_heads":32,"num_key_value_heads":16,"head_dim":128,"vocab_size":262208,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"attn_logit_softcapping":null,"sliding_window":1024}}"#,
    ),
    (
        "gpt-oss-20b",
        r#"{"model_type":"gpt_oss","hidden_size":2880,"intermediate_size":2880,"num_hidden_layers":24,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":64,"vocab_size":201088,"max_position_embeddings":131072,"tie_word_embeddings":false,"attention_bias":true,"num_local_experts":32,"num_experts_per_tok":4}"#,
    ),
    (
        "gpt-oss-120b",
        r#"{"model_type":"gpt_oss","hidden_size":2880,"intermediate_size":2880,"num_hidden_layers":36,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":64,"vocab_size":201088,"max_position_embeddings":131072,"tie_word_embeddings":false,"attention_bias":true,"num_local_experts":128,"num_experts_per_tok":4}"#,
    ),
    (
        "deepseek-v3",
        r#"{"model_type":"deepseek_v3","hidden_size":7168,"intermediate_size":18432,"num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,"head_dim":64,"vocab_size":129280,"max_position_embeddings":163840,"tie_word_embeddings":false,"attention_bias":false,"moe_intermediate_size":2048,"num_experts_per_tok":8,"n_shared_experts":1,"n_routed_experts":256,"first_k_dense_replace":3,"q_lora_rank":1536,"kv_lora_rank":512,"qk_rope_head_dim":64,"qk_nope_head_dim":128,"v_head_dim":128}"#,
    ),
    (
        "olmo-2-7b",
        r#"{"model_type":"olmo2","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":100352,"max_position_embeddings":4096,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
    (
        "olmo-2-13b",
        r#"{"model_type":"olmo2","hidden_size":5120,"intermediate_size":13824,"num_hidden_layers":40,"num_attention_heads":40,"num_key_value_heads":40,"vocab_size":100352,"max_position_embeddings":4096,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
    (
        "smollm3-3b",
        r#"{"model_type":"smollm3","hidden_size":2048,"intermediate_size":11008,"num_hidden_layers":36,"num_attention_heads":16,"num_key_value_heads":4,"vocab_size":128256,"max_position_embeddings":65536,"tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false}"#,
    ),
    (
        "llama-3.2-1b",
        r#"{"model_type":"llama","hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":64,"vocab_size":128256,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false}"#,
    ),
    (
        "llama-3.2-3b",
        r#"{"model_type":"llama","hidden_size":3072,"intermediate_size":8192,"num_hidden_layers":28,"num_attention_heads":24,"num_key_value_heads":8,"head_dim":128,"vocab_size":128256,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false}"#,
    ),
    (
        "phi-2",
        r#"{"model_type":"phi","hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":51200,"max_position_embeddings":2048,"tie_word_embeddings":false,"qk_layernorm":false,"partial_rotary_factor":0.4}"#,
    ),
    (
        "falcon-7b",
        r#"{"model_type":"falcon","hidden_size":4544,"num_hidden_layers":32,"num_attention_heads":71,"vocab_size":65024,"max_position_embeddings":2048,"tie_word_embeddings":true,"bias":false,"new_decoder_architecture":false,"num_kv_heads":71,"multi_query":true,"parallel_attn":true,"num_ln_in_parallel_attn":null,"ffn_hidden_size":18176}"#,
    ),
    (
        "granite-3.1-8b",
        r#"{"model_type":"granite","hidden_size":4096,"intermediate_size":12800,"num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":49155,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false}"#,
    ),
    (
        "qwen1.5-moe-a2.7b",
        r#"{"model_type":"qwen2_moe","hidden_size":2048,"intermediate_size":5632,"num_hidden_layers":24,"num_attention_heads":16,"num_key_value_heads":16,"vocab_size":151936,"max_position_embeddings":8192,"tie_word_embeddings":false,"qkv_bias":true,"moe_intermediate_size":1408,"num_experts":60,"num_experts_per_tok":4,"decoder_sparse_step":1,"mlp_only_layers":[],"shared_expert_intermediate_size":5632}"#,
    ),
    (
        "granite-3.1-3b-a800m",
        r#"{"model_type":"granitemoe","hidden_size":1536,"intermediate_size":512,"num_hidden_layers":32,"num_attention_heads":24,"num_key_value_heads":8,"vocab_size":49155,"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"num_local_experts":40,"num_experts_per_tok":8}"#,
    ),
    (
        "glm-4-9b-0414",
        r#"{"model_type":"glm4","hidden_size":4096,"intermediate_size":13696,"num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":2,"head_dim":128,"vocab_size":151552,"max_position_embeddings":32768,"tie_word_embeddings":false,"attention_bias":true,"partial_rotary_factor":0.5}"#,
    ),
    (
        "command-r-v01",
        r#"{"model_type":"cohere","hidden_size":8192,"intermediate_size":22528,"num_hidden_layers":40,"num_attention_heads":64,"num_key_value_heads":64,"vocab_size":256000,"max_position_embeddings":8192,"tie_word_embeddings":true,"attention_bias":false,"use_qk_norm":false}"#,
    ),
    (
        "command-r7b-12-2024",
        r#"{"model_type":"cohere2","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":256000,"max_position_embeddings":8192,"tie_word_embeddings":true,"attention_bias":false}"#,
    ),
    (
        "pythia-1b",
        r#"{"model_type":"gpt_neox","hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":8,"vocab_size":50304,"max_position_embeddings":2048,"tie_word_embeddings":false,"attention_bias":true,"use_parallel_residual":true,"partial_rotary_factor":0.25}"#,
    ),
    (
        "starcoder2-3b",
        r#"{"model_type":"starcoder2","hidden_size":3072,"intermediate_size":12288,"num_hidden_layers":30,"num_attention_heads":24,"num_key_value_heads":2,"vocab_size":49152,"max_position_embeddings":16384,"tie_word_embeddings":true,"use_bias":true,"sliding_window":4096}"#,
    ),
    (
        "stablelm-2-1.6b",
        r#"{"model_type":"stablelm","hidden_size":2048,"intermediate_size":5632,"num_hidden_layers":24,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":100352,"max_position_embeddings":4096,"tie_word_embeddings":false,"use_qkv_bias":true,"use_parallel_residual":false,"qk_layernorm":false,"partial_rotary_factor":0.25}"#,
    ),
    (
        "ministral-8b-2410",
        r#"{"model_type":"ministral","hidden_size":4096,"intermediate_size":12288,"num_hidden_layers":36,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":131072,"max_position_embeddings":32768,"tie_word_embeddings":false,"sliding_window":32768}"#,
    ),
    (
        "exaone-3.5-7.8b",
        r#"{"model_type":"exaone","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":102400,"max_position_embeddings":32768,"tie_word_embeddings":false,"attention_bias":false,"mlp_bias":false}"#,
    ),
    (
        "ernie-4.5-0.3b",
        r#"{"model_type":"ernie4_5","hidden_size":1024,"intermediate_size":3072,"num_hidden_layers":18,"num_attention_heads":16,"num_key_value_heads":2,"head_dim":128,"vocab_size":103424,"max_position_embeddings":131072,"tie_word_embeddings":true,"use_bias":false}"#,
    ),
    (
        "mistral-small-3.1-24b",
        r#"{"model_type":"mistral3","tie_word_embeddings":false,"text_config":{"model_type":"mistral","hidden_size":5120,"intermediate_size":32768,"num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":131072,"max_position_embeddings":131072,"tie_word_embeddings":false,"sliding_window":null}}"#,
    ),
    // GLM-4.5-Air and GLM-4.5: config.json fields as NVIDIA-NeMo/Megatron-Bridge's
    // tests/unit_tests/models/glm/test_glm45_bridge.py spells them out (the Air's also in
    // ms-swift's dump of ZhipuAI/GLM-4.5-Air's Glm4MoeConfig).
    (
        "glm-4.5-air",
        r#"{"model_type":"glm4_moe","hidden_size":4096,"intermediate_size":10944,"moe_intermediate_size":1408,"num_hidden_layers":46,"num_attention_heads":96,"num_key_value_heads":8,"head_dim":128,"n_routed_experts":128,"n_shared_experts":1,"num_experts_per_tok":8,"first_k_dense_replace":1,"attention_bias":true,"use_qk_norm":false,"partial_rotary_factor":0.5,"vocab_size":151552,"max_position_embeddings":131072,"tie_word_embeddings":false}"#,
    ),
    (
        "glm-4.5",
        r#"{"model_type":"glm4_moe","hidden_size":5120,"intermediate_size":12288,"moe_intermediate_size":1536,"num_hidden_layers":92,"num_attention_heads":96,"num_key_value_heads":8,"head_dim":128,"n_routed_experts":160,"n_shared_experts":1,"num_experts_per_tok":8,"first_k_dense_replace":3,"attention_bias":true,"use_qk_norm":true,"partial_rotary_factor":0.5,"vocab_size":151552,"max_position_embeddings":131072,"tie_word_embeddings":false}"#,
    ),
    // OLMoE-1B-7B-0924: allenai/OLMoE-1B-7B-0924's config.json fields as public test fixtures
    // spell them out.
    (
        "olmoe-1b-7b-0924",
        r#"{"model_type":"olmoe","hidden_size":2048,"intermediate_size":1024,"num_hidden_layers":16,"num_attention_heads":16,"num_key_value_heads":16,"num_experts":64,"num_experts_per_tok":8,"vocab_size":50304,"max_position_embeddings":4096,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
    // StarCoder (bigcode/starcoder, 15.5B): its config.json fields as the Cerebras model zoo's
    // GPTBigCode converter defaults and a public architecture-analyzer test spell them out.
    (
        "starcoder",
        r#"{"model_type":"gpt_bigcode","n_embd":6144,"n_layer":40,"n_head":48,"n_inner":24576,"n_positions":8192,"vocab_size":49152,"multi_query":true,"tie_word_embeddings":true}"#,
    ),
    (
        "llava-1.5-7b",
        r#"{"model_type":"llava","tie_word_embeddings":false,"text_config":{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"head_dim":128,"vocab_size":32064,"max_position_embeddings":4096,"tie_word_embeddings":false,"attention_bias":false,"mlp_bias":false}}"#,
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
        // The families of issue 9 at their published sizes: `num_parameters()` of each model
        // built from its published config.json (language model only for the multimodal Gemma 3,
        // Mistral-Small-3.1 and LLaVA), equal to the Hub's safetensors totals where they list
        // one (`fixtures/peft/families_published.json`; Falcon-7B's checkpoint stores its tied
        // head twice).
        let families: &[(&str, u64)] = &[
            ("qwen3-0.6b", 596_049_920),
            ("qwen3-4b", 4_022_468_096),
            ("qwen3-8b", 8_190_735_360),
            ("qwen3-14b", 14_768_307_200),
            ("qwen3-32b", 32_762_123_264),
            ("qwen3-30b-a3b", 30_532_122_624),
            ("gemma-2-9b", 9_241_705_984),
            ("gemma-3-1b", 999_885_952),
            ("gemma-3-4b", 3_880_263_168),
            ("gemma-3-12b", 11_766_034_176),
            ("gemma-3-27b", 27_009_346_304),
            ("gpt-oss-20b", 20_914_757_184),
            ("gpt-oss-120b", 116_829_156_672),
            ("deepseek-v3", 671_026_404_352),
            ("olmo-2-7b", 7_298_617_344),
            ("olmo-2-13b", 13_716_198_400),
            ("smollm3-3b", 3_075_098_624),
            ("llama-3.2-1b", 1_235_814_400),
            ("llama-3.2-3b", 3_212_749_824),
            ("phi-2", 2_779_683_840),
            ("falcon-7b", 6_921_720_704),
            ("granite-3.1-8b", 8_170_848_256),
            ("qwen1.5-moe-a2.7b", 14_315_784_192),
            ("granite-3.1-3b-a800m", 3_298_793_472),
            ("glm-4-9b-0414", 9_400_279_040),
            ("command-r-v01", 34_980_831_232),
            ("command-r7b-12-2024", 8_028_033_024),
            ("pythia-1b", 1_011_781_632),
            ("starcoder2-3b", 3_030_371_328),
            ("stablelm-2-1.6b", 1_644_515_328),
            ("ministral-8b-2410", 8_019_808_256),
            ("exaone-3.5-7.8b", 7_818_448_896),
            ("ernie-4.5-0.3b", 360_748_032),
            ("mistral-small-3.1-24b", 23_572_403_200),
            ("llava-1.5-7b", 6_738_939_904),
            // `num_parameters()` of transformers 5.24's model built from the published config
            // (`fixtures/peft/families_published.json`): GLM-4.5-Air's card says 106B and
            // GLM-4.5's 355B (its checkpoint adds the multi-token-prediction layer),
            // OLMoE-1B-7B's Hub page 6.92B.
            ("glm-4.5-air", 106_852_245_504),
            ("glm-4.5", 352_797_814_784),
            ("olmoe-1b-7b-0924", 6_919_161_856),
            // StarCoder's card: 15.5B parameters.
            ("starcoder", 15_517_456_384),
        ];
        for (name, count) in published.iter().chain(families) {
            let shape = spec(name).expect(name).build().expect(name);
            assert_eq!(shape.total_params(), *count, "{name}");
        }
        assert_eq!(names().len(), published.len() + families.len() + 1);
        for name in names() {
            assert!(spec(name).is_some(), "{name}");
        }
    }
}

//! Which layers of a mixture-of-experts model have experts, against transformers 5.24: each
//! expectation is the first and last index of the layers whose `mlp` has `experts` (and of the
//! others), with how many layers with experts follow each, in
//! `AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **fields))`, built on the
//! meta device. A checkpointed backward peaks while recomputing one of them, with the later
//! layers' gradients alive.

use ftbudget_core::{LayerSpan, MlpLayout};
use ftbudget_models::from_config_json;

/// `(first, last, sparse layers after first, after last)` of the dense and the expert layers,
/// and the count of expert layers.
type Span = Option<(u32, u32, u32, u32)>;
type Spans = (Span, Span, u64);

fn spans(config: &str) -> Spans {
    let span =
        |s: Option<LayerSpan>| s.map(|s| (s.first, s.last, s.sparse_after[0], s.sparse_after[1]));
    match from_config_json(config, "t").unwrap().mlp {
        MlpLayout::Experts(e) => (span(e.dense_span), span(e.sparse_span), e.sparse_layers),
        other => panic!("not an MoE layout: {other:?}"),
    }
}

#[test]
fn dense_and_sparse_layers_match_transformers() {
    let cases: [(&str, Spans); 4] = [
        // qwen3_moe, mlp_only_layers=[1]: sparse, dense, sparse.
        (
            r#"{"model_type":"qwen3_moe","num_hidden_layers":3,"hidden_size":64,"intermediate_size":128,"moe_intermediate_size":32,"num_experts":4,"num_experts_per_tok":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"vocab_size":128,"mlp_only_layers":[1],"decoder_sparse_step":1}"#,
            (Some((1, 1, 1, 1)), Some((0, 2, 1, 0)), 2),
        ),
        // qwen2_moe, decoder_sparse_step=2: dense, sparse, dense, sparse.
        (
            r#"{"model_type":"qwen2_moe","num_hidden_layers":4,"hidden_size":64,"intermediate_size":128,"moe_intermediate_size":32,"num_experts":4,"num_experts_per_tok":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":128,"decoder_sparse_step":2,"shared_expert_intermediate_size":64}"#,
            (Some((0, 2, 2, 1)), Some((1, 3, 1, 0)), 2),
        ),
        // deepseek_v3, first_k_dense_replace=3: three dense layers, then three sparse.
        (
            r#"{"model_type":"deepseek_v3","num_hidden_layers":6,"first_k_dense_replace":3,"hidden_size":64,"intermediate_size":128,"moe_intermediate_size":32,"n_routed_experts":4,"num_experts_per_tok":2,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":128,"kv_lora_rank":16,"qk_rope_head_dim":8,"qk_nope_head_dim":8,"v_head_dim":16,"n_group":1,"topk_group":1}"#,
            (Some((0, 2, 3, 3)), Some((3, 5, 2, 0)), 3),
        ),
        // glm4_moe, first_k_dense_replace=1: one dense layer, then three sparse.
        (
            r#"{"model_type":"glm4_moe","num_hidden_layers":4,"first_k_dense_replace":1,"hidden_size":64,"intermediate_size":128,"moe_intermediate_size":32,"n_routed_experts":4,"num_experts_per_tok":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"vocab_size":128,"n_group":1,"topk_group":1}"#,
            (Some((0, 0, 3, 3)), Some((1, 3, 2, 0)), 3),
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(spans(config), expected, "{config}");
    }
}

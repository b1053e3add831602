//! Published anchors: numbers printed in papers and by peft for real models.

use ftbudget_core::ModelShape;

fn counts(model: &ModelShape, spec: &str) -> (u64, u64) {
    let plan = ftbudget_roster::registry()
        .unwrap()
        .build(spec)
        .unwrap()
        .plan(model)
        .unwrap();
    (plan.trainable_params().unwrap(), plan.all_params().unwrap())
}

/// peft's `print_trainable_parameters` for Llama-2-7B, r=8 on q_proj and v_proj.
#[test]
fn llama_2_7b_q_v_r8_matches_peft() {
    let model = ftbudget_models::load("llama-2-7b").unwrap();
    assert_eq!(
        counts(&model, "lora:r=8,targets=q_proj+v_proj"),
        (4_194_304, 6_742_609_920)
    );
}

/// peft's `lora_alpha` only scales the update: the counts are peft's for r=8 whatever alpha is,
/// the spec reads back as written, and a non-positive alpha is refused naming the option.
#[test]
fn lora_alpha_changes_no_count() {
    let model = ftbudget_models::load("llama-2-7b").unwrap();
    let spec = "lora:r=8,alpha=16,targets=q_proj+v_proj";
    assert_eq!(counts(&model, spec), (4_194_304, 6_742_609_920));
    let registry = ftbudget_roster::registry().unwrap();
    assert_eq!(registry.build(spec).unwrap().spec(), spec);
    let err = registry
        .build("qlora:r=8,alpha=0")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("alpha") && err.contains("positive"), "{err}");
}

/// LoRA paper (Hu et al. 2021), GPT-3 175B (d_model 12288, 96 layers): |Theta| = 2 x L x d x r
/// per adapted matrix, so r=1 on Wq,Wv (or r=2 on Wv alone) gives 4.7M and r=8 on Wq,Wv (or r=4
/// on Wq,Wk,Wv,Wo) gives 37.7M (section 4 and Table 6 budgets).
#[test]
fn lora_paper_gpt3_budgets() {
    let gpt3 = r#"{"model_type":"llama","hidden_size":12288,"intermediate_size":49152,
        "num_hidden_layers":96,"num_attention_heads":96,"vocab_size":50257}"#;
    let model = ftbudget_models::from_config_json(gpt3, "gpt3-175b").unwrap();
    let trainable = |spec: &str| counts(&model, spec).0;
    assert_eq!(trainable("lora:r=1,targets=q_proj+v_proj"), 4_718_592);
    assert_eq!(trainable("lora:r=2,targets=v_proj"), 4_718_592);
    assert_eq!(trainable("lora:r=8,targets=q_proj+v_proj"), 37_748_736);
    assert_eq!(trainable("lora:r=4,targets=attn"), 37_748_736);
}

/// DoRA paper (Liu et al. 2024), Table 1: LLaMA-7B, r=32 on q,k,v,up,down: 0.83% trainable for
/// LoRA and 0.84% for DoRA (peft's trainable / all params).
#[test]
fn dora_paper_llama_7b_percentages() {
    let model = ftbudget_models::load("llama-2-7b").unwrap();
    let percent = |spec: &str| {
        let (t, a) = counts(&model, spec);
        (t as f64 / a as f64 * 10_000.0).round() / 100.0
    };
    let targets = "targets=q_proj+k_proj+v_proj+up_proj+down_proj";
    assert_eq!(percent(&format!("lora:r=32,{targets}")), 0.83);
    assert_eq!(percent(&format!("dora:r=32,{targets}")), 0.84);
}

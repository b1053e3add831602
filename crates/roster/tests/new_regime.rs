//! A worked example of adding a regime with no core edit: IA3 (Liu et al. 2022, peft's
//! `IA3Config`) and prompt tuning (`PromptTuningConfig`) defined here through the public API only
//! (an [`AdapterLayout`] of named tensors, a regime-wide parameter, extra tokens), registered
//! with `inventory` in this test binary alone, and checked against peft's counts.
//!
//! A real regime crate does the same in its `lib.rs` and adds one line to the roster (see
//! CONTRIBUTING.md, "Adding a regime").

use ftbudget_core::{
    AdapterLayout, AdapterPiece, AdapterSite, BaseTraining, BaseTreatment, MemorySettings,
    ModelShape, OptionDoc, OptionReader, PieceMatmul, Regime, RegimeError, RegimeRegistration,
    RegimeSpec, SizeForm, Storage, TargetSpec, TrainingPlan, estimate_memory, names_select,
};

/// IA3 on a Linear whose output it scales (peft: `ia3_l` of shape `(out, 1)`); backward needs
/// the unscaled output, `out` per token.
const IA3_OUTPUT: AdapterLayout = AdapterLayout::new("ia3", SizeForm::OUT).with(
    AdapterPiece::trainable("ia3_l", SizeForm::OUT, PieceMatmul::No),
);
/// IA3 on a feed-forward Linear, whose input it scales (peft: `(1, in)`); the scaled input is
/// what the matmul saves, `in` per token.
const IA3_INPUT: AdapterLayout = AdapterLayout::new("ia3", SizeForm::IN).with(
    AdapterPiece::trainable("ia3_l", SizeForm::IN, PieceMatmul::No),
);

const IA3_OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "targets",
        values: "name+name...",
        default: "k_proj+v_proj+down_proj",
        help: "modules to scale (peft's target_modules; LLaMA's default)",
    },
    OptionDoc {
        key: "feedforward",
        values: "name+name...",
        default: "down_proj",
        help: "targets whose input is scaled instead of their output (peft's feedforward_modules)",
    },
];

struct Ia3 {
    targets: Vec<String>,
    feedforward: Vec<String>,
}

impl Regime for Ia3 {
    fn spec(&self) -> String {
        format!(
            "ia3-example:targets={},feedforward={}",
            self.targets.join("+"),
            self.feedforward.join("+")
        )
    }

    fn label(&self) -> String {
        "IA3 (example)".into()
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        let regime = || "ia3-example".to_string();
        let targets = TargetSpec::Names(self.targets.clone());
        let selected = model
            .select_targets(&targets)
            .map_err(|cause| RegimeError::Shape {
                regime: regime(),
                cause,
            })?;
        plan.set_base(
            model,
            BaseTreatment {
                training: BaseTraining::Frozen,
                block_linear_storage: Storage::Policy,
                other_storage: Storage::Policy,
            },
        );
        for (module, m) in model.modules.iter().enumerate() {
            if !selected.contains(module, m) {
                continue;
            }
            let layout = if names_select(&self.feedforward, m) {
                &IA3_INPUT
            } else {
                &IA3_OUTPUT
            };
            // IA3 has no rank: its sizes do not depend on it.
            let site = AdapterSite {
                module,
                rank: 0,
                layout,
            };
            plan.push_adapter(model, site)
                .map_err(|cause| RegimeError::Count {
                    regime: regime(),
                    cause,
                })?;
        }
        Ok(())
    }
}

fn names(reader: &OptionReader<'_>, key: &str, default: &str) -> Vec<String> {
    reader
        .raw(key)
        .unwrap_or(default)
        .split('+')
        .map(str::to_string)
        .collect()
}

fn build_ia3(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, IA3_OPTIONS)?;
    Ok(Box::new(Ia3 {
        targets: names(&reader, "targets", IA3_OPTIONS[0].default),
        feedforward: names(&reader, "feedforward", IA3_OPTIONS[1].default),
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: "ia3-example",
        summary: "IA3: a trainable scaling vector per targeted Linear (worked example)",
        options: IA3_OPTIONS,
        rank_option: None,
        build: build_ia3,
    }
}

/// Prompt tuning: `virtual_tokens` trainable embeddings of `hidden`, prepended to every
/// sequence; a regime-wide parameter, no adapter on any module.
struct PromptTuning {
    virtual_tokens: u64,
}

impl Regime for PromptTuning {
    fn spec(&self) -> String {
        format!(
            "prompt-tuning-example:virtual_tokens={}",
            self.virtual_tokens
        )
    }

    fn label(&self) -> String {
        "prompt tuning (example)".into()
    }

    fn plan_into(&self, model: &ModelShape, plan: &mut TrainingPlan) -> Result<(), RegimeError> {
        plan.clear();
        plan.set_base(
            model,
            BaseTreatment {
                training: BaseTraining::Frozen,
                block_linear_storage: Storage::Policy,
                other_storage: Storage::Policy,
            },
        );
        let numel = self.virtual_tokens * model.dims.hidden;
        plan.push_extra_params(model, "prompt_encoder.embedding.weight", numel, 1, true);
        plan.add_extra_tokens(self.virtual_tokens);
        Ok(())
    }
}

const PROMPT_OPTIONS: &[OptionDoc] = &[OptionDoc {
    key: "virtual_tokens",
    values: "<int>",
    default: "20",
    help: "virtual tokens prepended to the input (peft's num_virtual_tokens)",
}];

fn build_prompt(spec: &RegimeSpec) -> Result<Box<dyn Regime>, RegimeError> {
    let reader = OptionReader::new(spec, PROMPT_OPTIONS)?;
    Ok(Box::new(PromptTuning {
        virtual_tokens: reader.positive("virtual_tokens", 20, 1 << 16)?,
    }))
}

ftbudget_core::inventory::submit! {
    RegimeRegistration {
        name: "prompt-tuning-example",
        summary: "prompt tuning: trainable virtual-token embeddings (worked example)",
        options: PROMPT_OPTIONS,
        rank_option: None,
        build: build_prompt,
    }
}

fn llama_2_7b() -> ModelShape {
    ftbudget_models::load("llama-2-7b").unwrap()
}

fn planned(spec: &str, model: &ModelShape) -> TrainingPlan {
    let registry = ftbudget_roster::registry().unwrap();
    registry.build(spec).unwrap().plan(model).unwrap()
}

#[test]
fn the_new_regimes_join_the_roster_ones_in_the_registry() {
    let mut expected: Vec<&str> = ftbudget_roster::EXPECTED_REGIMES.to_vec();
    expected.extend(["ia3-example", "prompt-tuning-example"]);
    expected.sort_unstable();
    assert_eq!(ftbudget_roster::registry().unwrap().names(), expected);
}

/// peft 0.21.2, `get_peft_model(LlamaForCausalLM(Llama-2-7B config) on meta,
/// IA3Config(task_type="CAUSAL_LM")).get_nb_trainable_parameters()` = (614400, 6739030016):
/// `ia3_l` of (4096, 1) on k_proj and v_proj and (1, 11008) on down_proj, 32 layers:
/// 32 x (4096 + 4096 + 11008) = 614,400 by hand.
#[test]
fn ia3_counts_match_peft_on_llama_2_7b() {
    let model = llama_2_7b();
    let plan = planned("ia3-example", &model);
    assert_eq!(plan.trainable_params().unwrap(), 614_400);
    assert_eq!(plan.all_params().unwrap(), 6_739_030_016);
    assert_eq!(*plan.totals(), plan.recount(&model));
    let names: Vec<String> = plan
        .groups(&model)
        .filter(|g| g.trainable)
        .map(|g| g.source.describe(&model))
        .collect();
    assert_eq!(
        names,
        [
            "model.layers.*.self_attn.k_proj.ia3_l",
            "model.layers.*.self_attn.v_proj.ia3_l",
            "model.layers.*.mlp.down_proj.ia3_l",
        ]
    );
}

/// The memory model needs nothing new: under PyTorch's amp-bf16 with AdamW, the bf16 base is
/// 2 bytes per parameter, the fp32 vectors 4, their gradients 4, Adam's two fp32 moments 8 and
/// a 4-byte step per tensor (96 tensors: 3 per layer).
#[test]
fn ia3_memory_is_the_bookkeeping_of_its_vectors() {
    let model = llama_2_7b();
    let plan = planned("ia3-example", &model);
    let estimate = estimate_memory(&model, &plan, &MemorySettings::pytorch()).unwrap();
    assert_eq!(estimate.weights, 6_738_415_616 * 2 + 614_400 * 4);
    assert_eq!(estimate.gradients, 614_400 * 4);
    assert_eq!(estimate.optimizer, 614_400 * 8 + 96 * 4);
}

/// peft 0.21.2, `PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)` on the same
/// model: (81920, 6738497536), one `prompt_encoder.default.embedding.weight` of (20, 4096).
#[test]
fn prompt_tuning_counts_match_peft_and_lengthen_the_sequence() {
    let model = llama_2_7b();
    let plan = planned("prompt-tuning-example:virtual_tokens=20", &model);
    assert_eq!(plan.trainable_params().unwrap(), 20 * 4096);
    assert_eq!(plan.all_params().unwrap(), 6_738_497_536);
    assert_eq!(*plan.totals(), plan.recount(&model));
    assert_eq!(plan.extra_tokens(), 20);
    // Activations see 2028 + 20 tokens: as many as a plan without virtual tokens at 2048.
    let mut settings = MemorySettings::pytorch();
    settings.workload.seq = 2028;
    let prompted = estimate_memory(&model, &plan, &settings).unwrap();
    let mut unprompted_plan = plan.clone();
    unprompted_plan.clear();
    unprompted_plan.set_base(
        &model,
        BaseTreatment {
            training: BaseTraining::Frozen,
            block_linear_storage: Storage::Policy,
            other_storage: Storage::Policy,
        },
    );
    unprompted_plan.push_extra_params(
        &model,
        "prompt_encoder.embedding.weight",
        20 * 4096,
        1,
        true,
    );
    settings.workload.seq = 2048;
    let unprompted = estimate_memory(&model, &unprompted_plan, &settings).unwrap();
    assert_eq!(prompted.activations, unprompted.activations);
    assert_eq!(prompted.total, unprompted.total);
}

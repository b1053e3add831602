//! Kind `lora-counts` (experiment 28, the seed lab): one model, several regimes, a table of
//! parameters and bytes per bucket, a stacked bar chart, and a report whose every figure, the
//! production-scale comparison and the corrections of the seed's two slips included, comes from
//! the code.

use super::config::{ChartKeys, MemoryKeys, RegimeEntry, build_regimes, labelled_comparison};
use super::{Experiment, OutputFile};
use anyhow::{Context, Result};
use ftbudget_core::{
    DType, MemorySettings, ModelShape, ModuleGroup, Nf4Layout, NormKind, ParamKind, PositionKind,
    Registry,
};
use ftbudget_report::chart::{Segment, StackedBars, stacked_bars};
use ftbudget_report::template::{Values, bullet_list};
use ftbudget_report::{
    Comparison, Row, TableLabels, TableStyle, compare, group_digits, render_table_with,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[allow(dead_code)]
    kind: String,
    /// A preset name (`ftbudget presets`).
    model: String,
    /// The preset used for the production-scale paragraph.
    production_model: String,
    /// The LoRA rank the report's questions are about.
    focus_rank: u64,
    regimes: Vec<RegimeEntry>,
    memory: MemoryKeys,
    table: TableKeys,
    chart: ChartKeys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableKeys {
    file: String,
    optimizer_header: String,
    ratio_header: String,
}

pub fn generate(exp: &Experiment) -> Result<Vec<OutputFile>> {
    let config: Config = exp.parse()?;
    let registry = ftbudget_roster::registry()?;
    let regimes = build_regimes(exp, &registry, &config.regimes)?;
    let settings = config.memory.settings(exp)?;
    let model = load_model(exp, "model", &config.model)?;
    let production = load_model(exp, "production_model", &config.production_model)?;

    let cmp = labelled_comparison(exp, "regimes", &model, &regimes, &config.regimes, &settings)?;
    let labels = TableLabels {
        optimizer: config.table.optimizer_header.clone(),
        ratio: config.table.ratio_header.clone(),
    };
    let table = render_table_with(&cmp, TableStyle::Markdown, &labels);

    let chart = stacked_bars(&StackedBars {
        title: config.chart.title.clone(),
        categories: cmp.rows.iter().map(|r| r.label.clone()).collect(),
        segments: segments(&cmp, &config.table.optimizer_header),
        y_label: "Memory (MiB)".into(),
        size: config.chart.size(),
    })
    .map_err(|e| exp.key_error("chart", e))?;

    let mut values = Values::new();
    values
        .set("table", table.trim_end())
        .set("chart_file", config.chart.file.clone())
        .set("model_description", describe_model(&model))
        .set("regime_list", regime_list(&config.regimes, &cmp))
        .set("settings", config.memory.markdown_list())
        .set("command", command(&config))
        .set("batch", settings.workload.batch.to_string())
        .set("seq", settings.workload.seq.to_string());
    let focus = Focus::new(
        exp,
        &registry,
        &config,
        &settings,
        &model,
        &production,
        &cmp,
    )?;
    focus.fill(&mut values);

    let report = exp.render_report(&values)?;
    Ok(vec![
        OutputFile::text(&config.table.file, table),
        OutputFile::chart(&config.chart, chart),
        report,
    ])
}

fn load_model(exp: &Experiment, key: &str, name: &str) -> Result<ModelShape> {
    ftbudget_models::load(name).map_err(|e| exp.key_error(key, e))
}

const MIB: f64 = 1024.0 * 1024.0;

fn segments(cmp: &Comparison, optimizer_name: &str) -> Vec<Segment> {
    let bucket = |name: &str, f: fn(&Row) -> u64| Segment {
        name: name.to_string(),
        values: cmp.rows.iter().map(|r| f(r) as f64 / MIB).collect(),
    };
    let mut out = vec![
        bucket("Weights", |r| r.bytes.weights),
        bucket("Grads", |r| r.bytes.gradients),
        bucket(optimizer_name, |r| r.bytes.optimizer),
        bucket("Activations", |r| r.bytes.activations),
    ];
    if cmp.rows.iter().any(|r| r.bytes.weight_casts > 0) {
        out.push(bucket("Weight casts", |r| r.bytes.weight_casts));
    }
    out
}

fn describe_model(model: &ModelShape) -> String {
    let d = model.dims;
    let norm = match model.norm {
        NormKind::RmsNorm => "RMSNorm (gain only)",
        NormKind::LayerNorm { bias: true } => "LayerNorm (weight and bias)",
        NormKind::LayerNorm { bias: false } => "LayerNorm (weight only)",
        NormKind::NonParametricLayerNorm => "LayerNorm without parameters",
    };
    let positions = match model.positions {
        PositionKind::Rotary => "RoPE (no position parameters)",
        PositionKind::Learned => "learned positions",
    };
    let biases = if model.modules.iter().any(|m| m.bias) {
        "Linear biases"
    } else {
        "no Linear biases"
    };
    let tied = if model.tied_embeddings {
        "embedding tied to the lm_head (counted once)"
    } else {
        "separate lm_head"
    };
    format!(
        "`{}`: {} layers, {} heads, d_model {}, d_ff {}, vocab {}, {tied}, {positions}, {norm}, \
         {biases}; {} parameters in all, {} of them in the Linear weights of the blocks",
        model.name,
        d.layers,
        d.heads,
        d.hidden,
        d.intermediate,
        d.vocab,
        group_digits(model.total_params()),
        group_digits(model.block_linear_weight_params()),
    )
}

fn regime_list(entries: &[RegimeEntry], cmp: &Comparison) -> String {
    bullet_list(
        entries
            .iter()
            .zip(&cmp.rows)
            .map(|(e, r)| format!("{}: `--regime {}`", e.label, r.regime)),
    )
}

fn command(config: &Config) -> String {
    let mut parts = vec![format!("ftbudget estimate --model {}", config.model)];
    for r in &config.regimes {
        parts.push(format!("--regime {}", r.spec));
    }
    for (flag, value, _) in config.memory.flags() {
        parts.push(format!("{flag} {value}"));
    }
    parts.push("--format markdown".into());
    parts.join(" \\\n  ")
}

/// A percentage with two decimals, three below 1% (0.391%).
fn pct(x: f64) -> String {
    if x < 0.01 {
        format!("{:.3}%", 100.0 * x)
    } else {
        format!("{:.2}%", 100.0 * x)
    }
}

/// The focus rank on both models, and the NF4 overheads.
struct Focus {
    rank: u64,
    mini: Scale,
    prod: Scale,
    /// LoRA r=rank on q_proj and v_proj only on the production model (peft's printed anchor).
    prod_qv_trainable: u64,
    prod_qv_all: u64,
    mini_lora: Row,
    mini_full: Row,
    qlora: Row,
    dora: Row,
    nf4_seed: f64,
    nf4_fp16: f64,
    nf4_double_quant: f64,
    /// The (tied) embedding's share of the model's parameters: what QLoRA leaves in 16 bits.
    embedding_share: f64,
}

/// One model's figures for LoRA at the focus rank, all-linear.
struct Scale {
    name: String,
    hidden: u64,
    base: u64,
    trainable: u64,
    all: u64,
    /// LoRA parameters over the weights of the square attention projection: 2r/h.
    square_ratio: f64,
    full_total: u64,
    lora_total: u64,
    activations: u64,
    full_activations: u64,
}

impl Scale {
    fn new(
        exp: &Experiment,
        registry: &Registry,
        rank: u64,
        model: &ModelShape,
        settings: &MemorySettings,
    ) -> Result<Self> {
        let spec = format!("lora:r={rank}");
        let regimes = vec![registry.build("full-ft")?, registry.build(&spec)?];
        let cmp = compare(model, &regimes, settings).map_err(|e| exp.key_error("focus_rank", e))?;
        let lora = &cmp.rows[1];
        let q = model
            .modules
            .iter()
            .find(|m| m.group == ModuleGroup::Attention && m.in_features == m.out_features)
            .with_context(|| format!("{}: no square attention projection", model.name))?;
        let square_ratio = (rank * (q.in_features + q.out_features)) as f64
            / (q.in_features * q.out_features) as f64;
        Ok(Scale {
            name: model.name.clone(),
            hidden: model.dims.hidden,
            base: lora.base_params,
            trainable: lora.trainable_params,
            all: lora.all_params,
            square_ratio,
            full_total: cmp.rows[0].bytes.total,
            lora_total: lora.bytes.total,
            activations: lora.bytes.activations,
            full_activations: cmp.rows[0].bytes.activations,
        })
    }

    /// The figures both models report, each name prefixed with `prefix`.
    fn fill(&self, v: &mut Values, prefix: &str) {
        let gib = ftbudget_report::units::binary;
        v.prefixed(prefix)
            .set("hidden", self.hidden.to_string())
            .set("base", group_digits(self.base))
            .set("trainable", group_digits(self.trainable))
            .set("frac_base", pct(self.trainable as f64 / self.base as f64))
            .set("frac_all", pct(self.trainable as f64 / self.all as f64))
            .set("square_ratio", pct(self.square_ratio))
            .set("lora_total", gib(self.lora_total))
            .set("full_total", gib(self.full_total))
            .set(
                "total_ratio",
                format!("{:.3}", self.lora_total as f64 / self.full_total as f64),
            )
            .set(
                "activation_share",
                pct(self.activations as f64 / self.lora_total as f64),
            );
    }
}

/// Bytes of absmax statistics per weight for a large tensor (`4096 x 4096`): the packed half
/// byte and the codebooks left out.
fn nf4_overhead(layout: Nf4Layout) -> f64 {
    let n: u64 = 4096 * 4096;
    let layout = Nf4Layout {
        codebooks: false,
        ..layout
    };
    (layout.tensor_bytes(n) - n.div_ceil(2)) as f64 / n as f64
}

impl Focus {
    fn new(
        exp: &Experiment,
        registry: &Registry,
        config: &Config,
        settings: &MemorySettings,
        model: &ModelShape,
        production: &ModelShape,
        cmp: &Comparison,
    ) -> Result<Self> {
        let rank = config.focus_rank;
        let spec = format!("lora:r={rank}");
        let find = |prefix: &str| {
            cmp.rows
                .iter()
                .find(|r| r.regime == prefix || r.regime.starts_with(&format!("{prefix}:r={rank}")))
                .cloned()
                .ok_or_else(|| {
                    exp.key_error(
                        "regimes",
                        format!("the report needs a `{prefix}` regime at r={rank}"),
                    )
                })
        };
        let mini_full = find("full-ft")?;
        let mini_lora = cmp
            .rows
            .iter()
            .find(|r| r.regime == spec)
            .cloned()
            .ok_or_else(|| exp.key_error("regimes", format!("the report needs `{spec}`")))?;
        let qlora = find("qlora")?;
        let dora = find("dora")?;
        let qv = registry.build(&format!("lora:r={rank},targets=q_proj+v_proj"))?;
        let qv_plan = qv.plan(production)?;
        Ok(Focus {
            rank,
            mini: Scale::new(exp, registry, rank, model, settings)?,
            prod: Scale::new(exp, registry, rank, production, settings)?,
            prod_qv_trainable: qv_plan.trainable_params()?,
            prod_qv_all: qv_plan.all_params()?,
            mini_lora,
            mini_full,
            qlora,
            dora,
            nf4_seed: nf4_overhead(Nf4Layout::bitsandbytes(false)),
            nf4_fp16: nf4_overhead(Nf4Layout {
                absmax_dtype: DType::F16,
                ..Nf4Layout::bitsandbytes(false)
            }),
            nf4_double_quant: nf4_overhead(Nf4Layout::bitsandbytes(true)),
            embedding_share: model
                .params
                .iter()
                .filter(|p| p.kind == ParamKind::Embedding)
                .map(|p| p.total())
                .sum::<u64>() as f64
                / model.total_params() as f64,
        })
    }

    fn fill(&self, v: &mut Values) {
        let g = |n: u64| group_digits(n);
        let gib = |b: u64| ftbudget_report::units::binary(b);
        let (m, p) = (&self.mini, &self.prod);
        m.fill(v, "mini_");
        p.fill(v, "prod_");
        v.set("rank", self.rank.to_string())
            .set("mini_all", g(m.all))
            .set("mini_embedding_share", pct(self.embedding_share))
            .set("mini_activations", gib(m.activations))
            .set("mini_full_state", gib(m.full_total - m.full_activations))
            .set("mini_lora_state", gib(m.lora_total - m.activations))
            .set("prod_name", p.name.clone())
            .set("prod_r_over_h", pct(self.rank as f64 / p.hidden as f64))
            .set("prod_qv_trainable", g(self.prod_qv_trainable))
            .set("prod_qv_all", g(self.prod_qv_all))
            .set("nf4_seed_bytes", format!("{}", self.nf4_seed))
            .set("nf4_fp16_bytes", format!("{}", self.nf4_fp16))
            .set("nf4_dq_bits", format!("{:.3}", self.nf4_double_quant * 8.0))
            .set("nf4_dq_bytes", format!("{:.4}", self.nf4_double_quant))
            .set("qlora_label", self.qlora.label.clone())
            .set("qlora_weights", g(self.qlora.bytes.weights))
            .set("lora_weights", g(self.mini_lora.bytes.weights))
            .set("code_trainable", g(self.mini_lora.trainable_params))
            .set("code_frozen", g(self.mini_lora.frozen_params))
            .set("code_weights", g(self.mini_lora.bytes.weights))
            .set("code_grads", g(self.mini_lora.bytes.gradients))
            .set("code_adam", g(self.mini_lora.bytes.optimizer))
            .set("code_activations", g(self.mini_lora.bytes.activations))
            .set("code_total", g(self.mini_lora.bytes.total))
            .set("code_full_total", g(self.mini_full.bytes.total))
            .set(
                "code_ratio",
                format!("{:.4}", self.mini_lora.ratio_vs_baseline),
            )
            .set(
                "dora_extra",
                g(self.dora.trainable_params - self.mini_lora.trainable_params),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's hand-worked check (REPORT.template.md), typed from the arithmetic there,
    /// against the code: LoRA r=8, all Linears, on MiniGPT under the seed's conventions.
    #[test]
    fn hand_worked_lora_r8_matches_the_code() {
        let model = ftbudget_models::load("minigpt").unwrap();
        let registry = ftbudget_roster::registry().unwrap();
        let regimes = vec![
            registry.build("full-ft").unwrap(),
            registry.build("lora:r=8").unwrap(),
        ];
        let cmp = compare(&model, &regimes, &MemorySettings::seed()).unwrap();
        let lora = &cmp.rows[1];
        // Per layer: 4 x (64 + 64) x 8 = 4,096 attention, 2 x (64 + 256) x 8 = 5,120 MLP.
        assert_eq!(lora.trainable_params, 4 * (4_096 + 5_120)); // 36,864
        // 4 x 49,152 Linear weights, the tied 512 x 64 embedding, 9 RMSNorms of 64.
        assert_eq!(lora.frozen_params, 196_608 + 32_768 + 576); // 229,952
        // fp16 base; adapters in fp16 plus the fp32 master copy.
        assert_eq!(lora.bytes.weights, 229_952 * 2 + 36_864 * (2 + 4)); // 681,088
        assert_eq!(lora.bytes.gradients, 36_864 * 2); // 73,728
        assert_eq!(lora.bytes.optimizer, 36_864 * 8); // 294,912: Adam m and v in fp32
        // batch 16 x seq 32 x d_model 64 x 4 layers x 16 B.
        assert_eq!(lora.bytes.activations, 16 * 32 * 64 * 4 * 16); // 2,097,152
        assert_eq!(lora.bytes.total, 3_146_880); // 681,088 + 73,728 + 294,912 + 2,097,152
        // Full FT: 229,952 x 16 + 2,097,152.
        assert_eq!(cmp.rows[0].bytes.total, 5_776_384);
    }

    /// The report says its `[memory]` table is `--conventions seed`; hold it to that.
    #[test]
    fn experiment_28_settings_are_the_seed_conventions() {
        let root = crate::report::workspace_root();
        let exp =
            Experiment::read(&root, std::path::Path::new("experiments/28-lora-counts")).unwrap();
        let config: Config = exp.parse().unwrap();
        assert_eq!(
            config.memory.settings(&exp).unwrap(),
            MemorySettings::seed()
        );
    }

    /// The committed chart is a legible image: its size, the four bucket colours filling real
    /// area, and dark text pixels (a missing font gives a chart without text).
    #[test]
    fn memory_breakdown_png_is_legible() {
        let path =
            crate::report::workspace_root().join("experiments/28-lora-counts/memory_breakdown.png");
        let bytes = std::fs::read(path).unwrap();
        let mut reader = png::Decoder::new(&bytes[..]).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert!(info.width >= 1000 && info.height >= 600);
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks_exact(3).collect();
        for colour in &ftbudget_report::chart::PALETTE[..4] {
            let n = pixels
                .iter()
                .filter(|p| **p == [colour.0, colour.1, colour.2])
                .count();
            assert!(n > 2_000, "bucket colour {colour:?}: {n} pixels");
        }
        let dark = pixels.iter().filter(|p| p.iter().all(|&c| c < 60)).count();
        assert!(dark > 2_000, "{dark} dark pixels");
    }

    #[test]
    fn nf4_overheads_correct_the_seed() {
        // fp32 absmax per 64 weights: 4/64 B; fp16 would be 2/64; double quant:
        // 8/64 + 32/(64*256) bits, plus one fp32 offset per tensor.
        assert_eq!(nf4_overhead(Nf4Layout::bitsandbytes(false)), 4.0 / 64.0);
        let fp16 = Nf4Layout {
            absmax_dtype: DType::F16,
            ..Nf4Layout::bitsandbytes(false)
        };
        assert_eq!(nf4_overhead(fp16), 2.0 / 64.0);
        let bits = nf4_overhead(Nf4Layout::bitsandbytes(true)) * 8.0;
        let expected = 8.0 / 64.0 + 32.0 / (64.0 * 256.0);
        assert!((bits - expected).abs() < 1e-5, "{bits}");
        assert_eq!(format!("{bits:.3}"), "0.127");
    }
}

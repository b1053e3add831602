//! safetensors headers -> the exact tensor inventory -> a [`ModelShape`]. Only the 8-byte length
//! and the JSON header of each file are read; the `safetensors` crate parses the header and the
//! data offsets are checked against the file length, so tensor data is never touched.

use crate::LoadedModel;
use crate::ModelError;
use ftbudget_core::{
    ActivationRecipe, AdapterHost, Architecture, AttentionLayout, BlockSpec, Dims, Family,
    LinearLayout, LinearModule, MlpLayout, ModelShape, ModuleGroup, NormKind, ParamGroup,
    ParamKind, PositionKind,
};
use safetensors::tensor::Metadata;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest header accepted (the crate's own limit is 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
}

impl TensorEntry {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

fn st_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Parse one header given the 8-byte length prefix + JSON text, and the file's total length.
pub fn parse_header(
    path: &Path,
    header: &[u8],
    file_len: u64,
) -> Result<Vec<TensorEntry>, ModelError> {
    let metadata: Metadata = serde_json::from_slice(header)
        .map_err(|e| st_err(path, format!("malformed header: {e}")))?;
    let mut entries: Vec<(usize, TensorEntry)> = Vec::new();
    let mut spans: Vec<(usize, usize, u64)> = Vec::new();
    for (name, info) in metadata.tensors() {
        let mut numel: u64 = 1;
        for &d in &info.shape {
            numel = numel
                .checked_mul(d as u64)
                .ok_or_else(|| st_err(path, format!("tensor `{name}`: shape overflows")))?;
        }
        let bytes = numel
            .checked_mul(info.dtype.size() as u64)
            .ok_or_else(|| st_err(path, format!("tensor `{name}`: byte size overflows")))?;
        let (start, end) = info.data_offsets;
        if end < start || (end - start) as u64 != bytes {
            return Err(st_err(
                path,
                format!("tensor `{name}`: data_offsets do not match its shape and dtype"),
            ));
        }
        spans.push((start, end, bytes));
        entries.push((
            start,
            TensorEntry {
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                dtype: format!("{:?}", info.dtype),
                name,
            },
        ));
    }
    spans.sort_unstable();
    let mut cursor = 0usize;
    for (start, end, _) in &spans {
        if *start != cursor {
            return Err(st_err(path, "data_offsets are not contiguous"));
        }
        cursor = *end;
    }
    let expected = (cursor as u64)
        .checked_add(header.len() as u64 + 8)
        .ok_or_else(|| st_err(path, "data size overflows"))?;
    if expected != file_len {
        return Err(st_err(
            path,
            format!("file is {file_len} bytes but its header describes {expected} (truncated?)"),
        ));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// Read the header of one `.safetensors` file (never its tensor data).
pub fn read_file(path: &Path) -> Result<Vec<TensorEntry>, ModelError> {
    let io = |e: std::io::Error| st_err(path, e.to_string());
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| st_err(path, "shorter than the 8-byte header length"))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES {
        return Err(st_err(path, format!("header length {n} is too large")));
    }
    if n.saturating_add(8) > file_len {
        return Err(st_err(
            path,
            format!("header length {n} runs past the end of the file (truncated?)"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    parse_header(path, &header, file_len)
}

/// Read every shard listed in a `model.safetensors.index.json`.
pub fn read_index(index: &Path) -> Result<Vec<TensorEntry>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|e| st_err(index, e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Json {
        what: index.display().to_string(),
        reason: e.to_string(),
    })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| st_err(index, "weight_map is missing or not an object"))?;
    let mut shards: Vec<&str> = Vec::new();
    for v in map.values() {
        let s = v
            .as_str()
            .ok_or_else(|| st_err(index, "weight_map values must be file names"))?;
        if !shards.contains(&s) {
            shards.push(s);
        }
    }
    shards.sort_unstable();
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut all = Vec::new();
    for shard in shards {
        if shard.contains('/') || shard.contains('\\') || shard.contains("..") {
            return Err(st_err(
                index,
                format!("shard name `{shard}` is not a plain file name"),
            ));
        }
        all.extend(read_file(&dir.join(shard))?);
    }
    Ok(all)
}

/// `model.layers.3.mlp.experts.5.w1.weight` -> `model.layers.*.mlp.experts.*.w1.weight`, and the
/// number of indexed components.
fn pattern(name: &str) -> String {
    name.split('.')
        .map(|c| {
            if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                c
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn group_of(path: &str) -> ModuleGroup {
    let last = path.rsplit('.').next().unwrap_or(path);
    if path == "lm_head" || path.ends_with(".lm_head") {
        ModuleGroup::Output
    } else if last == "gate" || last == "router" {
        ModuleGroup::Router
    } else if path.contains("attn") || path.contains("attention") {
        ModuleGroup::Attention
    } else {
        ModuleGroup::Mlp
    }
}

fn is_embedding(path: &str) -> Option<ParamKind> {
    let last = path.rsplit('.').next().unwrap_or(path);
    match last {
        "wte" | "embed_tokens" | "word_embeddings" | "tok_embeddings" => Some(ParamKind::Embedding),
        "wpe" | "embed_positions" | "position_embeddings" => Some(ParamKind::PositionEmbedding),
        _ => None,
    }
}

fn is_norm(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.contains("norm") || last.starts_with("ln")
}

/// Why a tensor in a checkpoint is not a model parameter, if it is not: quantization state
/// (bitsandbytes, GPTQ, AWQ, FP8 scales, gpt-oss's MXFP4 blocks and scales), buffers
/// (`e_score_correction_bias`, GPT-2's causal masks, rotary tables).
fn non_parameter(t: &TensorEntry) -> Option<&'static str> {
    let name = t.name.as_str();
    let last = name.rsplit('.').next().unwrap_or(name);
    if t.shape.len() == 4 && (name.ends_with("attn.bias") || name.ends_with("attn.masked_bias")) {
        return Some("attention mask buffers");
    }
    if name.contains(".quant_state.")
        || matches!(
            last,
            "absmax" | "quant_map" | "nested_absmax" | "nested_quant_map" | "SCB" | "weight_format"
        )
    {
        return Some("bitsandbytes quantization state");
    }
    if matches!(last, "qweight" | "qzeros" | "scales" | "g_idx") {
        return Some("GPTQ/AWQ packed weights and scales");
    }
    if last.ends_with("_scale_inv") || last.ends_with("weight_scale") || last == "input_scale" {
        return Some("FP8 scale tensors");
    }
    if last.ends_with("_blocks") || last.ends_with("_scales") {
        return Some("MXFP4 blocks and scales");
    }
    if last == "e_score_correction_bias" || last == "inv_freq" {
        return Some("buffers");
    }
    None
}

/// Classify an inventory into a shape (see [`model_from_inventory`]).
pub fn shape_from_inventory(name: &str, tensors: &[TensorEntry]) -> Result<ModelShape, ModelError> {
    model_from_inventory(name, tensors).map(|m| m.shape)
}

/// Classify an inventory into a shape: 2-D `.weight` tensors are Linears (GPT-2's Conv1D ones are
/// `[in, out]`), their `.bias` siblings Linear biases, 1-D tensors of norms norm parameters,
/// embeddings by name. Tensors with the same name pattern and shape become one group with a count.
/// Tensors that are not parameters (quantization state, buffers) are counted apart, in a note.
/// The head count is inferred where a tensor records it (per-head q/k norms, attention sinks);
/// otherwise a head dimension is assumed and the note says so.
pub fn model_from_inventory(
    name: &str,
    tensors: &[TensorEntry],
) -> Result<LoadedModel, ModelError> {
    if tensors.is_empty() {
        return Err(ModelError::Field {
            field: "safetensors".into(),
            reason: "the header lists no tensors".into(),
        });
    }
    let mut notes = Vec::new();
    let groups = group_tensors(name, tensors, &mut notes);
    let conv1d = tensors.iter().any(|t| t.name.contains("transformer.h."))
        && tensors
            .iter()
            .any(|t| t.name.ends_with("attn.c_attn.weight"));
    let Classified {
        mut modules,
        mut params,
        embed,
        positions_table,
        layers,
    } = classify(&groups, conv1d)?;
    link_biases(&mut modules, &mut params);
    fold_v4_experts(&mut modules, &mut params);
    let (vocab, hidden) = embed.unwrap_or((1, 1));
    let tied = !modules.iter().any(|m| m.group == ModuleGroup::Output);
    if tied && embed.is_some() {
        let mut head = LinearModule::new(
            "lm_head",
            (hidden, vocab),
            false,
            1,
            LinearLayout::Linear,
            ModuleGroup::Output,
        );
        head.weight_tied = true;
        head.in_all_linear = false;
        modules.push(head);
    }
    let intermediate = modules
        .iter()
        .filter(|m| m.group == ModuleGroup::Mlp)
        .map(|m| m.in_features.max(m.out_features))
        .max()
        .unwrap_or(hidden);
    let (heads, kv_heads, head_dim) =
        infer_heads(name, &modules, &params, hidden, conv1d, &mut notes);
    let dims = Dims {
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        intermediate,
        vocab,
        max_positions: positions_table.unwrap_or(1),
    };
    let positions = if positions_table.is_some() {
        PositionKind::Learned
    } else {
        PositionKind::Rotary
    };
    let norm = if params.iter().any(|p| p.kind == ParamKind::NormBias) {
        NormKind::LayerNorm { bias: true }
    } else {
        NormKind::RmsNorm
    };
    let has = |leaf: &[&str]| modules.iter().any(|m| leaf.contains(&m.name.as_str()));
    let attention = if has(&["c_attn", "qkv_proj", "query_key_value", "Wqkv"]) {
        AttentionLayout::FusedQkv
    } else {
        AttentionLayout::Separate
    };
    let mlp = if has(&["gate_proj", "w1", "gate_up_proj"]) {
        MlpLayout::Gated
    } else {
        MlpLayout::Plain
    };
    let block = BlockSpec {
        residual_dropout: true,
        conv1d,
        recipe: if conv1d {
            ActivationRecipe::Gpt2
        } else {
            ActivationRecipe::Generic
        },
        ..BlockSpec::DECODER
    };
    let shape = ModelShape::from_parts(
        name,
        Family::new(if conv1d { "gpt2" } else { "custom" }),
        dims,
        Architecture {
            norm,
            attention,
            mlp,
            positions,
            block,
        },
        tied,
        modules,
        params,
    )?;
    Ok(LoadedModel { shape, notes })
}

/// Tensors grouped by name pattern and shape, with a count, in first-seen order; tensors that
/// are not parameters are left out and summed in a note.
fn group_tensors(
    name: &str,
    tensors: &[TensorEntry],
    notes: &mut Vec<String>,
) -> Vec<(String, Vec<u64>, u64)> {
    let mut skipped: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    // (pattern, shape) -> count, in first-seen order.
    let mut groups: Vec<(String, Vec<u64>, u64)> = Vec::new();
    let mut index: BTreeMap<(String, Vec<u64>), usize> = BTreeMap::new();
    for t in tensors {
        if let Some(why) = non_parameter(t) {
            let entry = skipped.entry(why).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(t.numel());
            continue;
        }
        let key = (pattern(&t.name), t.shape.clone());
        match index.get(&key) {
            Some(&i) => groups[i].2 += 1,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key.0, key.1, 1));
            }
        }
    }
    for (why, (count, elements)) in &skipped {
        notes.push(format!(
            "{name}: {count} tensors ({elements} elements) of {why} are not model parameters: \
             counted apart, neither trainable nor frozen"
        ));
    }
    groups
}

/// What [`classify`] finds in the grouped tensors.
struct Classified {
    modules: Vec<LinearModule>,
    params: Vec<ParamGroup>,
    embed: Option<(u64, u64)>,
    positions_table: Option<u64>,
    layers: u64,
}

/// Linears (Conv1D when `conv1d`), embeddings, norms and the rest, from the grouped tensors.
fn classify(groups: &[(String, Vec<u64>, u64)], conv1d: bool) -> Result<Classified, ModelError> {
    let mut modules: Vec<LinearModule> = Vec::new();
    let mut params: Vec<ParamGroup> = Vec::new();
    let mut embed: Option<(u64, u64)> = None;
    let mut positions_table: Option<u64> = None;
    let mut layers = 1;
    for (pat, shape, count) in groups {
        let (path, leaf) = pat.rsplit_once('.').unwrap_or(("", pat.as_str()));
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or(ModelError::Field {
                field: pat.clone(),
                reason: "size overflows".into(),
            })?;
        if numel == 0 {
            return Err(ModelError::Field {
                field: pat.clone(),
                reason: "has a zero dimension".into(),
            });
        }
        // One indexed component: a per-layer tensor (expert tensors have two).
        if pat.split('.').filter(|c| *c == "*").count() == 1 {
            layers = layers.max(*count);
        }
        let kind = if let Some(kind) = is_embedding(path).filter(|_| shape.len() == 2) {
            match kind {
                ParamKind::Embedding => embed = Some((shape[0], shape[1])),
                _ => positions_table = Some(shape[0]),
            }
            kind
        } else if leaf == "weight" && shape.len() == 2 && !is_norm(path) {
            let (in_f, out_f) = if conv1d && !path.ends_with("lm_head") {
                (shape[0], shape[1])
            } else {
                (shape[1], shape[0])
            };
            let layout = if conv1d && !path.ends_with("lm_head") {
                LinearLayout::Conv1D
            } else {
                LinearLayout::Linear
            };
            modules.push(LinearModule::new(
                path,
                (in_f, out_f),
                false,
                *count,
                layout,
                group_of(path),
            ));
            ParamKind::LinearWeight(modules.len() - 1)
        } else if leaf == "bias" && is_norm(path) {
            ParamKind::NormBias
        } else if leaf == "weight" && is_norm(path) {
            ParamKind::NormWeight
        } else {
            ParamKind::Other
        };
        params.push(ParamGroup {
            name: pat.clone(),
            numel,
            count: *count,
            kind,
        });
    }
    Ok(Classified {
        modules,
        params,
        embed,
        positions_table,
        layers,
    })
}

/// Link Linear biases to their modules.
fn link_biases(modules: &mut [LinearModule], params: &mut [ParamGroup]) {
    for p in params.iter_mut() {
        if p.kind != ParamKind::Other {
            continue;
        }
        let Some(path) = p.name.strip_suffix(".bias") else {
            continue;
        };
        if let Some(i) = modules
            .iter()
            .position(|m| m.path == path && m.out_features == p.numel && m.count == p.count)
        {
            modules[i].bias = true;
            p.kind = ParamKind::LinearBias(i);
        }
    }
}

/// Heads, key/value heads and head dimension, from what the tensors record: a per-head q norm
/// (`head_dim` long) or attention sinks (one per head) fix them; otherwise a head dimension is
/// assumed (64 for GPT-2's fused `c_attn`, else 128 where it divides the projections) and a
/// note says so.
fn infer_heads(
    name: &str,
    modules: &[LinearModule],
    params: &[ParamGroup],
    hidden: u64,
    conv1d: bool,
    notes: &mut Vec<String>,
) -> (u64, u64, u64) {
    let find = |leaf: &str| modules.iter().find(|m| m.name == leaf);
    let q_out = find("q_proj").map(|m| m.out_features);
    let kv_out = find("k_proj").map(|m| m.out_features);
    let param = |suffix: &str| {
        params
            .iter()
            .find(|p| p.name.ends_with(suffix))
            .map(|p| p.numel)
    };
    let from_head_dim = |dh: u64| {
        let q = q_out.unwrap_or(hidden);
        let kv = kv_out.unwrap_or(q);
        (q.is_multiple_of(dh) && kv.is_multiple_of(dh) && q >= dh)
            .then(|| (q / dh, (kv / dh).max(1), dh))
    };
    if let Some(dh) = param("self_attn.q_norm.weight").filter(|d| *d > 0)
        && let Some(found) = from_head_dim(dh)
    {
        return found;
    }
    if let Some(heads) = param("self_attn.sinks").filter(|h| *h > 0)
        && let Some(q) = q_out
        && q.is_multiple_of(heads)
        && let Some(found) = from_head_dim(q / heads)
    {
        return found;
    }
    let assumed = if conv1d { 64 } else { 128 };
    if let Some((heads, kv, dh)) = from_head_dim(assumed) {
        notes.push(format!(
            "{name}: the headers do not record the attention head count; assumed head_dim \
             {dh} ({heads} heads, {kv} key/value heads); put the config.json beside the \
             checkpoint for exact attention activations"
        ));
        return (heads, kv, dh);
    }
    notes.push(format!(
        "{name}: the headers do not record the attention head count; assumed one head of \
         {hidden} (attention activations are a lower bound); put the config.json beside the \
         checkpoint"
    ));
    (1, 1, hidden)
}

/// A Mixtral checkpoint in the transformers-4 layout (`...experts.N.w1.weight`, one Linear per
/// expert) is loaded by transformers 5 into fused 3-D parameters, and peft adapts those (see
/// tools/peft-reference/README.md). Fold `w1` and `w3` into one `gate_up_proj` host of rank factor
/// 2, and mark `w2` and the router `gate` as parameter hosts, so counts match peft.
fn fold_v4_experts(modules: &mut Vec<LinearModule>, params: &mut [ParamGroup]) {
    let expert = |m: &LinearModule, leaf: &str| {
        m.path.ends_with(&format!(".experts.*.{leaf}"))
            && !m.bias
            && m.layout == LinearLayout::Linear
    };
    let mut found = false;
    while let Some(w1) = modules.iter().position(|m| expert(m, "w1")) {
        let prefix = modules[w1].path.trim_end_matches("w1").to_string();
        let Some(w3) = modules.iter().position(|m| {
            m.path == format!("{prefix}w3")
                && expert(m, "w3")
                && (m.in_features, m.out_features, m.count)
                    == (
                        modules[w1].in_features,
                        modules[w1].out_features,
                        modules[w1].count,
                    )
        }) else {
            break;
        };
        found = true;
        let fused = &mut modules[w1];
        fused.path = format!("{}gate_up_proj", prefix.trim_end_matches("*."));
        fused.name = "gate_up_proj".into();
        fused.out_features *= 2;
        fused.host = AdapterHost::Parameter { fused: 2 };
        fused.target_names = vec!["w1".into(), "w3".into()];
        modules.remove(w3);
        for p in params.iter_mut() {
            let reindex = |i: usize| match i.cmp(&w3) {
                std::cmp::Ordering::Equal => w1 - usize::from(w1 > w3),
                std::cmp::Ordering::Greater => i - 1,
                std::cmp::Ordering::Less => i,
            };
            p.kind = match p.kind {
                ParamKind::LinearWeight(i) => ParamKind::LinearWeight(reindex(i)),
                ParamKind::LinearBias(i) => ParamKind::LinearBias(reindex(i)),
                k => k,
            };
        }
    }
    if found {
        for m in modules.iter_mut() {
            if expert(m, "w2") || m.group == ModuleGroup::Router {
                m.host = AdapterHost::Parameter { fused: 1 };
            }
        }
    }
}

/// The safetensors files a path stands for: a file, an index, or a folder holding either.
pub fn locate(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    ["model.safetensors.index.json", "model.safetensors"]
        .iter()
        .map(|f| path.join(f))
        .find(|p| p.is_file())
}

/// Split off the tensors of layers at index `layers` or beyond: a checkpoint can hold layers the
/// model does not run (DeepSeek-V3's multi-token-prediction layer `model.layers.61`, which makes
/// its 671B checkpoint 685B). Returns the tensors kept and the element count of those set apart.
pub fn split_extra_layers(tensors: Vec<TensorEntry>, layers: u64) -> (Vec<TensorEntry>, u64, u64) {
    let index_of = |name: &str| {
        let mut parts = name.split('.');
        while let Some(p) = parts.next() {
            if p == "layers" || p == "h" {
                return parts.next().and_then(|i| i.parse::<u64>().ok());
            }
        }
        None
    };
    let (mut kept, mut dropped, mut elements) = (Vec::new(), 0u64, 0u64);
    for t in tensors {
        match index_of(&t.name) {
            Some(i) if i >= layers => {
                dropped += 1;
                elements = elements.saturating_add(t.numel());
            }
            _ => kept.push(t),
        }
    }
    (kept, dropped, elements)
}

//! `--model`: a preset, an existing path, or a Hugging Face Hub id (`org/name[@revision]`),
//! tried in that order. A Hub id is resolved by crates/hub (the cache first, else config.json
//! alone from the Hub) and read by crates/models like a local config.json; with
//! `--exact-from-hub` the parameters come from the checkpoint's safetensors headers instead
//! (fetched by range requests, never the weights), and the attention dimensions, family and
//! architecture from config.json.

use anyhow::{Context, Result, bail};
use ftbudget_core::ModelShape;
use ftbudget_hub::{HubId, HubSettings, Snapshot, Source};
use std::path::Path;

/// The shape `--model` names, and the lines to print on stderr once it is accepted (the resolved
/// id, revision and commit of a Hub id), so that a failure stays a single line.
pub fn load(model: &str, exact_from_hub: bool) -> Result<(ModelShape, Vec<String>)> {
    let local = ftbudget_models::presets::spec(model).is_some() || Path::new(model).exists();
    if local || !HubId::looks_like(model) {
        if exact_from_hub {
            bail!("--exact-from-hub: `{model}` is not a Hub id (org/name[@revision])");
        }
        let loaded =
            ftbudget_models::load_model(model).with_context(|| format!("--model {model}"))?;
        let notes = loaded.notes.iter().map(|n| format!("note: {n}")).collect();
        return Ok((loaded.shape, notes));
    }
    let id = HubId::parse(model)?;
    let settings = HubSettings::from_env()?;
    let snapshot = ftbudget_hub::resolve(&id, &settings).context("--model")?;
    let resolved = format!(
        "model: {} (commit {}, {})",
        snapshot.id,
        snapshot.commit,
        match snapshot.source {
            Source::Cache => "from the Hugging Face cache",
            Source::Downloaded => "config.json downloaded into the Hugging Face cache",
        }
    );
    let config_path = snapshot.config_path();
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("--model {}: cannot read {}", id, config_path.display()))?;
    // The shape's name is the resolved id, so tables and JSON name it with its revision.
    let name = snapshot.id.to_string();
    let read = ftbudget_models::config::read_config_json(&text, &name)
        .with_context(|| format!("--model {id}: config.json"))?;
    let config = read
        .spec
        .build()
        .with_context(|| format!("--model {id}: config.json"))?;
    let mut lines = vec![resolved];
    lines.extend(read.notes.iter().map(|n| format!("note: {n}")));
    if !exact_from_hub {
        return Ok((config, lines));
    }
    let (shape, checkpoint) = from_checkpoint(&snapshot, &settings, config)?;
    lines.push(checkpoint);
    Ok((shape, lines))
}

/// The checkpoint's tensors counted exactly, with config.json's dimensions (but the layer count)
/// and architecture: the headers do not record the attention heads or the experts' top-k.
fn from_checkpoint(
    snapshot: &Snapshot,
    settings: &HubSettings,
    config: ModelShape,
) -> Result<(ModelShape, String)> {
    let id = snapshot.id.to_string();
    let headers = ftbudget_hub::checkpoint_headers(snapshot, settings).context("--model")?;
    let mut tensors = Vec::new();
    for h in &headers.files {
        let path = Path::new(&snapshot.id.repo).join(&h.file);
        let entries = ftbudget_models::inventory::parse_header(&path, &h.header, h.file_len)
            .context("--model")?;
        tensors.extend(entries);
    }
    // Layers beyond config.json's (a multi-token-prediction layer) are not model parameters.
    let (tensors, extra, extra_elements) =
        ftbudget_models::inventory::split_extra_layers(tensors, config.dims.layers);
    let checkpoint = ftbudget_models::inventory::shape_from_inventory(&id, &tensors)
        .with_context(|| format!("--model {id}: checkpoint"))?;
    let shape = ModelShape::from_parts(
        id.clone(),
        config.family.clone(),
        // The checkpoint's layer count goes with its modules' counts.
        ftbudget_core::shape::Dims {
            layers: checkpoint.dims.layers,
            ..config.dims
        },
        ftbudget_core::Architecture {
            norm: config.norm,
            attention: config.attention,
            mlp: config.mlp,
            positions: config.positions,
            block: config.block,
        },
        checkpoint.tied_embeddings,
        checkpoint.modules,
        checkpoint.params,
    )
    .with_context(|| format!("--model {id}: checkpoint"))?;
    let line = format!(
        "checkpoint: {} tensors in {} safetensors file(s) ({}), {} parameters (config.json: {})",
        tensors.len(),
        headers.files.len(),
        match headers.source {
            Source::Cache => "from the cache",
            Source::Downloaded => "headers fetched by range requests",
        },
        ftbudget_report::group_digits(shape.total_params()),
        ftbudget_report::group_digits(config.total_params()),
    );
    let line = if extra > 0 {
        format!(
            "{line}; {extra} tensors ({} elements) of layers beyond config.json's {} (multi-token prediction) set apart",
            ftbudget_report::group_digits(extra_elements),
            config.dims.layers
        )
    } else {
        line
    };
    Ok((shape, line))
}

//! Hugging Face Hub ids (`org/name[@revision]`) to a local folder holding the model's
//! `config.json`, and, on request, the checkpoint's safetensors headers. The Hugging Face cache
//! is read first, without network (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`, in huggingface_hub's layout); when the model is not cached and
//! `HF_HUB_OFFLINE` is not set, only `config.json` is downloaded (from `HF_ENDPOINT`, with
//! `HF_TOKEN` or the saved token) and stored in that same layout, so transformers reuses it.
//! Checkpoint headers come from HTTP Range requests and stay in memory. This is the only crate of
//! the workspace that does network I/O, and it never downloads weights. It knows nothing about
//! model shapes: `ftbudget-models` reads the files it returns.

mod cache;
pub mod checkpoint;
mod error;
mod http;
pub mod id;
pub mod settings;

pub use checkpoint::{CheckpointHeaders, SafetensorsHeader, checkpoint_headers};
pub use error::HubError;
pub use id::HubId;
pub use settings::HubSettings;

use cache::RepoCache;
use http::Client;
use std::path::PathBuf;

/// The one file a lookup downloads.
pub const CONFIG_FILE: &str = "config.json";
/// The largest `config.json` accepted.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Where a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Hugging Face cache, without network.
    Cache,
    /// The Hub (`config.json` is then stored in the cache; headers are not).
    Downloaded,
}

/// A resolved model: the snapshot folder of one commit, holding `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The id as resolved (its revision as asked for, `main` by default).
    pub id: HubId,
    /// The commit the revision names.
    pub commit: String,
    /// `<cache>/models--{org}--{name}/snapshots/{commit}`.
    pub dir: PathBuf,
    pub source: Source,
}

impl Snapshot {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
}

/// The snapshot folder holding `id`'s `config.json`: from the cache when the revision's ref (or
/// the commit itself) and the file are there, else downloaded into the cache (unless offline).
pub fn resolve(id: &HubId, settings: &HubSettings) -> Result<Snapshot, HubError> {
    let repo = RepoCache::new(&settings.cache_dir, id);
    let snapshot = |commit: String, source| Snapshot {
        id: id.clone(),
        dir: repo.snapshot_dir(&commit),
        commit,
        source,
    };
    if let Some(commit) = repo.commit_for(&id.revision)
        && repo.cached_file(&commit, CONFIG_FILE).is_some()
    {
        return Ok(snapshot(commit, Source::Cache));
    }
    let cache = settings.cache_dir.display().to_string();
    if settings.offline {
        return Err(HubError::Offline {
            id: id.to_string(),
            cache,
        });
    }
    let advice = format!(
        "the model is not in the Hugging Face cache ({cache}): go online, or pass a config.json path"
    );
    let client = Client::new(settings, id, advice);
    let reply = client.get(&id.revision, CONFIG_FILE, None)?;
    let header_error = |header: &str, reason: String| HubError::Header {
        id: id.to_string(),
        file: CONFIG_FILE.into(),
        header: header.into(),
        reason,
    };
    let commit = reply
        .header("x-repo-commit")
        .map(|c| c.trim().to_string())
        .ok_or_else(|| header_error("X-Repo-Commit", "absent".into()))?;
    if !id::is_commit(&commit) {
        return Err(header_error(
            "X-Repo-Commit",
            format!("`{commit}` is not a 40-hex commit"),
        ));
    }
    if id.revision_is_commit() && commit != id.revision {
        return Err(header_error(
            "X-Repo-Commit",
            format!("`{commit}` is not the commit asked for"),
        ));
    }
    let etag = ["x-linked-etag", "etag"]
        .iter()
        .find_map(|h| reply.header(h))
        .ok_or_else(|| header_error("ETag", "absent".into()))
        .and_then(|raw| normalize_etag(raw).map_err(|reason| header_error("ETag", reason)))?;
    let body = reply.read_all(MAX_CONFIG_BYTES)?;
    check_json_object(id, &body)?;
    repo.store(&id.revision, &commit, &etag, CONFIG_FILE, &body)?;
    Ok(snapshot(commit, Source::Downloaded))
}

/// `W/"abc"` -> `abc`, as huggingface_hub names blobs; only characters safe in a file name.
fn normalize_etag(raw: &str) -> Result<String, String> {
    let etag = raw.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
    if etag.is_empty()
        || etag.len() > 128
        || !etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(format!("`{raw}` is not a plain hash"));
    }
    Ok(etag.to_string())
}

fn check_json_object(id: &HubId, body: &[u8]) -> Result<(), HubError> {
    let not_json = |reason: String| HubError::NotJson {
        id: id.to_string(),
        file: CONFIG_FILE.into(),
        reason,
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.is_object() => Ok(()),
        Ok(_) => Err(not_json("not a JSON object".into())),
        Err(e) => Err(not_json(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_unquoted_and_checked() {
        assert_eq!(normalize_etag("\"abc123\"").unwrap(), "abc123");
        assert_eq!(normalize_etag("W/\"abc-123\"").unwrap(), "abc-123");
        for bad in ["\"\"", "\"../x\"", "a/b", "a b"] {
            assert!(normalize_etag(bad).is_err(), "{bad}");
        }
    }
}

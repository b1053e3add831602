//! One-line errors that name the id (with its revision) and say what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HubError {
    #[error("`{id}` is not a Hub id (org/name[@revision]): {reason}")]
    InvalidId { id: String, reason: String },
    #[error("{var}: {reason}")]
    Setting { var: String, reason: String },
    #[error(
        "{id}: the Hub answered {status} for {file} (gated or private model): accept the licence on {page} and set HF_TOKEN (or log in with `hf auth login`)"
    )]
    Unauthorized {
        id: String,
        file: String,
        status: u16,
        page: String,
    },
    #[error(
        "{id}: no such model repository on {endpoint} (HTTP {status}): check the id, or set HF_TOKEN if it is private"
    )]
    RepoNotFound {
        id: String,
        endpoint: String,
        status: u16,
    },
    #[error("{id}: {file} not found (HTTP 404): check the id and the revision")]
    NotFound { id: String, file: String },
    #[error(
        "{id}: not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set: go online (unset HF_HUB_OFFLINE), or pass a config.json path"
    )]
    Offline { id: String, cache: String },
    #[error(
        "{id}: the checkpoint's safetensors files are not in the cache and HF_HUB_OFFLINE is set: go online for --exact-from-hub, or drop that flag"
    )]
    OfflineCheckpoint { id: String },
    #[error("{id}: cannot reach {endpoint} ({reason}): {advice}")]
    Unreachable {
        id: String,
        endpoint: String,
        reason: String,
        advice: String,
    },
    #[error(
        "{id}: {file}: no answer from {endpoint} within {secs} s: retry, or raise FTBUDGET_HUB_TIMEOUT_SECS"
    )]
    Timeout {
        id: String,
        file: String,
        endpoint: String,
        secs: f64,
    },
    #[error(
        "{id}: {file}: the download stopped after {got} of {expected} bytes (truncated): retry; nothing was written to the cache"
    )]
    Truncated {
        id: String,
        file: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "{id}: {file} is not JSON ({reason}): check the id, the revision and HF_ENDPOINT; nothing was written to the cache"
    )]
    NotJson {
        id: String,
        file: String,
        reason: String,
    },
    #[error("{id}: {file}: the Hub answered HTTP {status}: retry later")]
    Status {
        id: String,
        file: String,
        status: u16,
    },
    #[error(
        "{id}: {file}: the response has no usable {header} header ({reason}); is HF_ENDPOINT a Hugging Face Hub?"
    )]
    Header {
        id: String,
        file: String,
        header: String,
        reason: String,
    },
    #[error("{id}: {file}: {reason}")]
    Transport {
        id: String,
        file: String,
        reason: String,
    },
    #[error("{id}: {file}: {reason}")]
    Safetensors {
        id: String,
        file: String,
        reason: String,
    },
    #[error("Hugging Face cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

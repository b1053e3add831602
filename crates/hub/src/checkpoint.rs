//! The safetensors headers of a checkpoint, for parameter counts exact to the checkpoint: read
//! from the snapshot folder when the files are cached, else fetched with HTTP Range requests
//! (the 8-byte length, then the JSON header), never the weights. Header bytes stay in memory:
//! a header alone stored as `model.safetensors` would be a broken file for transformers.

use crate::http::{Client, Reply};
use crate::{HubError, HubSettings, Snapshot, Source};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The sharded checkpoint's index, fetched first.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single-file checkpoint, fetched when the index is absent (404).
pub const SINGLE_FILE: &str = "model.safetensors";
/// The largest header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The largest index accepted.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Shards whose headers are fetched at the same time.
const PARALLEL_FETCHES: usize = 8;

/// One safetensors file's header: the JSON text after the 8-byte length, and the file's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    pub file: String,
    pub header: Vec<u8>,
    pub file_len: u64,
}

/// Every header of a checkpoint, in shard-name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointHeaders {
    pub files: Vec<SafetensorsHeader>,
    /// `Cache` when every file was in the snapshot folder, `Downloaded` when fetched by range.
    pub source: Source,
}

/// The checkpoint headers of `snapshot`'s commit: from the cached files when they are all
/// there, else from the Hub (never in offline mode).
pub fn checkpoint_headers(
    snapshot: &Snapshot,
    settings: &HubSettings,
) -> Result<CheckpointHeaders, HubError> {
    if let Some(files) = cached_headers(snapshot)? {
        return Ok(CheckpointHeaders {
            files,
            source: Source::Cache,
        });
    }
    let id = snapshot.id.to_string();
    if settings.offline {
        return Err(HubError::OfflineCheckpoint { id });
    }
    let client = Client::new(
        settings,
        &snapshot.id,
        "go online for --exact-from-hub, or drop that flag".into(),
    );
    let commit = snapshot.commit.as_str();
    let shards = match client.get(commit, INDEX_FILE, None) {
        Ok(reply) => {
            let index = reply.read_all(MAX_INDEX_BYTES)?;
            shard_names(&id, &index)?
        }
        Err(HubError::NotFound { .. }) => vec![SINGLE_FILE.to_string()],
        Err(e) => return Err(e),
    };
    let files = fetch_all(&client, commit, &shards)?;
    Ok(CheckpointHeaders {
        files,
        source: Source::Downloaded,
    })
}

/// The distinct file names of an index's `weight_map`, sorted; each must be a plain file name.
pub fn shard_names(id: &str, index: &[u8]) -> Result<Vec<String>, HubError> {
    let not_json = |reason: String| HubError::NotJson {
        id: id.to_string(),
        file: INDEX_FILE.into(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| not_json(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| not_json("weight_map is missing or not an object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    for v in map.values() {
        let name = v
            .as_str()
            .ok_or_else(|| not_json("weight_map values must be file names".into()))?;
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(not_json(format!(
                "shard name `{name}` is not a plain file name"
            )));
        }
        shards.push(name.to_string());
    }
    shards.sort_unstable();
    shards.dedup();
    if shards.is_empty() {
        return Err(not_json("weight_map lists no file".into()));
    }
    Ok(shards)
}

/// The headers of the files in the snapshot folder, when the index (or the single file) and
/// every shard it names are there.
fn cached_headers(snapshot: &Snapshot) -> Result<Option<Vec<SafetensorsHeader>>, HubError> {
    let id = snapshot.id.to_string();
    let index = snapshot.dir.join(INDEX_FILE);
    let shards = if index.is_file() {
        let bytes = std::fs::read(&index).map_err(|e| HubError::Cache {
            path: index.display().to_string(),
            reason: e.to_string(),
        })?;
        shard_names(&id, &bytes)?
    } else {
        vec![SINGLE_FILE.to_string()]
    };
    if !shards.iter().all(|s| snapshot.dir.join(s).is_file()) {
        return Ok(None);
    }
    shards
        .iter()
        .map(|s| read_local_header(&id, s, &snapshot.dir.join(s)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn read_local_header(id: &str, file: &str, path: &Path) -> Result<SafetensorsHeader, HubError> {
    let fail = |reason: String| HubError::Safetensors {
        id: id.to_string(),
        file: path.display().to_string(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| fail(e.to_string()))?;
    let file_len = f.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut prefix = [0u8; 8];
    f.read_exact(&mut prefix)
        .map_err(|_| fail("shorter than the 8-byte header length".into()))?;
    let n = header_length(prefix, file_len).map_err(fail)?;
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| fail(e.to_string()))?;
    Ok(SafetensorsHeader {
        file: file.to_string(),
        header,
        file_len,
    })
}

/// The header length the prefix announces, checked against the limit and the file size.
fn header_length(prefix: [u8; 8], file_len: u64) -> Result<u64, String> {
    let n = u64::from_le_bytes(prefix);
    if !(2..=MAX_HEADER_BYTES).contains(&n) {
        return Err(format!(
            "header length {n} is not between 2 and {MAX_HEADER_BYTES} bytes"
        ));
    }
    if n + 8 > file_len {
        return Err(format!(
            "header length {n} runs past the end of the {file_len}-byte file (truncated?)"
        ));
    }
    Ok(n)
}

/// Fetch every shard's header, a few at a time; the first failure (in shard order) is returned.
fn fetch_all(
    client: &Client<'_>,
    commit: &str,
    shards: &[String],
) -> Result<Vec<SafetensorsHeader>, HubError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<SafetensorsHeader, HubError>>>> =
        Mutex::new((0..shards.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_FETCHES.min(shards.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= shards.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = fetch_header(client, commit, &shards[i]);
                    failed.fetch_or(result.is_err(), Ordering::Relaxed);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut headers = Vec::with_capacity(shards.len());
    for result in results.into_iter().flatten() {
        headers.push(result?);
    }
    Ok(headers)
}

/// Two Range requests: bytes 0-7 (the header length, and the file size from Content-Range),
/// then exactly the header.
fn fetch_header(
    client: &Client<'_>,
    commit: &str,
    file: &str,
) -> Result<SafetensorsHeader, HubError> {
    let fail = |reason: String| HubError::Safetensors {
        id: client_id(client),
        file: file.to_string(),
        reason,
    };
    let reply = client.get(commit, file, Some((0, 7)))?;
    let (start, file_len) = range_of(&reply)?;
    if start != 0 {
        return Err(fail(format!("asked for bytes from 0, got from {start}")));
    }
    let prefix = reply.read_prefix(8)?;
    let n = header_length(prefix.try_into().unwrap_or_default(), file_len).map_err(fail)?;
    let reply = client.get(commit, file, Some((8, 8 + n - 1)))?;
    let (start, _) = range_of(&reply)?;
    let header = match start {
        8 => reply.read_prefix(n)?,
        // The server ignored the range: skip the length, stop after the header.
        0 => reply.read_prefix(8 + n)?.split_off(8),
        other => return Err(fail(format!("asked for bytes from 8, got from {other}"))),
    };
    Ok(SafetensorsHeader {
        file: file.to_string(),
        header,
        file_len,
    })
}

fn client_id(client: &Client<'_>) -> String {
    client.id_text()
}

/// Where the body starts in the file, and the file's size: from `Content-Range: bytes a-b/size`
/// on a 206, from `Content-Length` on a 200 (a server that ignores ranges).
fn range_of(reply: &Reply<'_>) -> Result<(u64, u64), HubError> {
    let bad = |reason: String| reply.body_error(reason);
    if reply.status == 206 {
        let text = reply
            .header("content-range")
            .ok_or_else(|| bad("a 206 response without Content-Range".into()))?;
        let parsed = text
            .trim()
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(span, size)| {
                let start = span.split_once('-')?.0.trim().parse().ok()?;
                Some((start, size.trim().parse().ok()?))
            });
        parsed.ok_or_else(|| bad(format!("unreadable Content-Range `{text}`")))
    } else {
        let size = reply
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                bad("the server ignored the Range request and sent no Content-Length".into())
            })?;
        Ok((0, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_shards_are_distinct_sorted_plain_names() {
        let index = br#"{"metadata":{},"weight_map":{"a":"m-2.safetensors","b":"m-1.safetensors","c":"m-2.safetensors"}}"#;
        assert_eq!(
            shard_names("o/m", index).unwrap(),
            ["m-1.safetensors", "m-2.safetensors"]
        );
        for bad in [
            &br#"{"weight_map":{"a":"../x.safetensors"}}"#[..],
            br#"{"weight_map":{"a":"sub/x.safetensors"}}"#,
            br#"{"weight_map":{"a":3}}"#,
            br#"{"weight_map":{}}"#,
            br#"{"metadata":{}}"#,
            b"<html>",
        ] {
            let err = shard_names("o/m", bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("o/m: model.safetensors.index.json"),
                "{err}"
            );
        }
    }

    #[test]
    fn header_lengths_are_bounded_by_the_file() {
        assert_eq!(header_length(10u64.to_le_bytes(), 18), Ok(10));
        assert!(header_length(11u64.to_le_bytes(), 18).is_err());
        assert!(header_length(0u64.to_le_bytes(), 18).is_err());
        assert!(header_length((MAX_HEADER_BYTES + 1).to_le_bytes(), u64::MAX).is_err());
    }
}

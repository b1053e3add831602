//! huggingface_hub's cache layout, read and written:
//!
//! ```text
//! <cache>/models--{org}--{name}/
//!     refs/{revision}               the commit hash the revision pointed to
//!     blobs/{etag}                  file contents, named by their ETag
//!     snapshots/{commit}/{file}     a relative symlink to ../../blobs/{etag}
//! ```
//!
//! Every file is written to a temporary name in its final directory and renamed into place, so a
//! reader (transformers, or this crate) never sees a half-written file. The blob is written
//! first, then the snapshot link, then the ref: a ref never names a snapshot without its file.

use crate::id::is_commit;
use crate::{HubError, HubId};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One repository's folder in the cache.
pub(crate) struct RepoCache {
    pub root: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, id: &HubId) -> Self {
        RepoCache {
            root: cache_dir.join(id.cache_folder()),
        }
    }

    /// The commit `revision` resolves to without the network: the revision itself when it is a
    /// commit hash, else the content of `refs/{revision}`.
    pub fn commit_for(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// `snapshots/{commit}/{file}` when it exists and is readable as a file (a dangling link is
    /// not cached).
    pub fn cached_file(&self, commit: &str, file: &str) -> Option<PathBuf> {
        let path = self.snapshot_dir(commit).join(file);
        path.is_file().then_some(path)
    }

    /// Store `bytes` as `file` of `commit` and point `refs/{revision}` at the commit (no ref
    /// for a revision that is itself the commit). Returns the snapshot path.
    pub fn store(
        &self,
        revision: &str,
        commit: &str,
        etag: &str,
        file: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, HubError> {
        let blob = self.root.join("blobs").join(etag);
        write_atomically(&blob, bytes)?;
        let target = self.snapshot_dir(commit).join(file);
        let depth = 2 + file.matches('/').count();
        let relative = format!("{}blobs/{etag}", "../".repeat(depth));
        link_atomically(&relative, &target, bytes)?;
        if revision != commit {
            write_atomically(&self.root.join("refs").join(revision), commit.as_bytes())?;
        }
        Ok(target)
    }
}

fn cache_error(path: &Path, e: std::io::Error) -> HubError {
    HubError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A name next to `path` that no other writer uses: `.{name}.{pid}.{n}.tmp`.
fn temporary_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn create_parent(path: &Path) -> Result<(), HubError> {
    match path.parent() {
        Some(dir) => fs::create_dir_all(dir).map_err(|e| cache_error(dir, e)),
        None => Ok(()),
    }
}

/// Write `bytes` to a temporary file beside `path`, flush it to disk, rename it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    create_parent(path)?;
    let tmp = temporary_sibling(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| cache_error(path, e))
}

/// Make `path` a symlink to `relative` (created under a temporary name, then renamed over
/// `path`); where symlinks are not available, a copy of `bytes`, as huggingface_hub does.
fn link_atomically(relative: &str, path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    create_parent(path)?;
    #[cfg(unix)]
    {
        let tmp = temporary_sibling(path);
        let linked = std::os::unix::fs::symlink(relative, &tmp).and_then(|()| {
            fs::rename(&tmp, path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        });
        if linked.is_ok() {
            return Ok(());
        }
    }
    let _ = relative;
    write_atomically(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ftbudget-hub-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn store_then_read_back_in_huggingface_hub_layout() {
        let dir = temp_dir("cache-layout");
        let id = HubId::parse("org/model@refs/pr/3").unwrap();
        let repo = RepoCache::new(&dir, &id);
        let commit = "a".repeat(40);
        assert_eq!(repo.commit_for(&id.revision), None);
        let path = repo
            .store(&id.revision, &commit, "e1", "config.json", b"{}")
            .unwrap();
        assert_eq!(
            path,
            dir.join("models--org--model/snapshots")
                .join(&commit)
                .join("config.json")
        );
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        #[cfg(unix)]
        assert_eq!(
            fs::read_link(&path).unwrap(),
            PathBuf::from("../../blobs/e1")
        );
        assert_eq!(
            fs::read_to_string(dir.join("models--org--model/refs/refs/pr/3")).unwrap(),
            commit
        );
        assert_eq!(repo.commit_for("refs/pr/3"), Some(commit.clone()));
        assert_eq!(repo.cached_file(&commit, "config.json"), Some(path));
        // No temporary file is left behind.
        let leftovers: Vec<_> = walk(&dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_commit_revision_writes_no_ref_and_a_bad_ref_is_not_a_commit() {
        let dir = temp_dir("cache-commit");
        let commit = "b".repeat(40);
        let id = HubId::parse(&format!("org/model@{commit}")).unwrap();
        let repo = RepoCache::new(&dir, &id);
        repo.store(&id.revision, &commit, "e2", "config.json", b"{}")
            .unwrap();
        assert!(!dir.join("models--org--model/refs").exists());
        write_atomically(&dir.join("models--org--model/refs/main"), b"not-a-commit").unwrap();
        assert_eq!(repo.commit_for("main"), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}

//! `org/name[@revision]`, checked the way huggingface_hub checks repository ids, so an id can
//! never name a path outside its cache folder.

use crate::HubError;
use std::fmt;

/// The revision used when the id names none.
pub const DEFAULT_REVISION: &str = "main";

/// A model repository on the Hub and the revision asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// A branch, a tag, `refs/pr/N`, or a 40-hex commit; `main` when the id names none.
    pub revision: String,
}

impl HubId {
    /// Parse `org/name` or `org/name@revision`.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let invalid = |reason: &str| HubError::InvalidId {
            id: text.to_string(),
            reason: reason.to_string(),
        };
        let (repo, revision) = match text.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (text, DEFAULT_REVISION),
        };
        let Some((org, name)) = repo.split_once('/') else {
            return Err(invalid("expected org/name"));
        };
        for part in [org, name] {
            check_repo_part(part).map_err(|reason| invalid(&reason))?;
        }
        check_revision(revision).map_err(|reason| invalid(&reason))?;
        Ok(HubId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// Whether `text` has the form of a Hub id (`org/name[@revision]` with valid parts).
    pub fn looks_like(text: &str) -> bool {
        Self::parse(text).is_ok()
    }

    /// The cache folder name: `models--org--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// Whether the revision is already a commit hash (40 lowercase hex digits).
    pub fn revision_is_commit(&self) -> bool {
        is_commit(&self.revision)
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// 40 lowercase hex digits, as the Hub writes commit hashes.
pub fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// huggingface_hub's rule: 1 to 96 of `[A-Za-z0-9_.-]`, no `--` or `..`, not starting or ending
/// with `-` or `.`.
fn check_repo_part(part: &str) -> Result<(), String> {
    if part.is_empty() || part.len() > 96 {
        return Err(format!("`{part}` must be 1 to 96 characters"));
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "`{part}` may hold only letters, digits, `_`, `.` and `-`"
        ));
    }
    if part.contains("--") || part.contains("..") {
        return Err(format!("`{part}` may not contain `--` or `..`"));
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err(format!("`{part}` may not start or end with `-` or `.`"));
    }
    Ok(())
}

/// A revision becomes a path under `refs/`: no empty, `.` or `..` components, no backslash or
/// control characters.
fn check_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() {
        return Err("the revision after `@` is empty".into());
    }
    if revision.len() > 255 {
        return Err("the revision is longer than 255 characters".into());
    }
    if revision
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ' ')
    {
        return Err(format!(
            "revision `{revision}` holds a space, backslash or control character"
        ));
    }
    if revision
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "revision `{revision}` has an empty, `.` or `..` component"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions() {
        let id = HubId::parse("Qwen/Qwen3-8B").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("Qwen/Qwen3-8B", "main")
        );
        assert_eq!(id.cache_folder(), "models--Qwen--Qwen3-8B");
        let id = HubId::parse("meta-llama/Llama-2-7b-hf@refs/pr/12").unwrap();
        assert_eq!(id.revision, "refs/pr/12");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert!(
            HubId::parse(&format!("a/b@{commit}"))
                .unwrap()
                .revision_is_commit()
        );
        assert!(!HubId::parse("a/b@v1.0").unwrap().revision_is_commit());
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            "llama",
            "a/b/c",
            "/b",
            "a/",
            "a/b@",
            "a/b@../x",
            "a/b@x//y",
            "a/.hidden",
            "a/b--c",
            "a b/c",
            "../etc/passwd",
            "a/b@x\\y",
        ] {
            assert!(HubId::parse(bad).is_err(), "{bad}");
            assert!(!HubId::looks_like(bad), "{bad}");
        }
    }
}

//! Where the cache is, which endpoint and token to use, whether the network may be used: read
//! from the same environment variables huggingface_hub reads.

use crate::HubError;
use std::path::PathBuf;
use std::time::Duration;

/// The public Hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The timeout of each step (resolving the host, connecting, sending the request, waiting for
/// the response, each read of the body) when `FTBUDGET_HUB_TIMEOUT_SECS` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// The environment variable that overrides [`DEFAULT_TIMEOUT`] (seconds, decimals allowed).
pub const TIMEOUT_VAR: &str = "FTBUDGET_HUB_TIMEOUT_SECS";

/// Everything a lookup needs from the environment, resolved once.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// `HF_ENDPOINT` without a trailing slash.
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file huggingface_hub writes at login.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` is 1, true, yes or on: the cache only.
    pub offline: bool,
    /// Applies to each step: resolving, connecting, sending, waiting for a response, each read.
    pub timeout: Duration,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HubSettings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self, HubError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Settings from any variable lookup (the process environment in [`HubSettings::from_env`]).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, HubError> {
        let set = |key: &str| var(key).filter(|v| !v.is_empty());
        let home = set("HOME").map(PathBuf::from);
        let hf_home = set("HF_HOME").map(PathBuf::from).or_else(|| {
            set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .map(|c| c.join("huggingface"))
        });
        let cache_dir = set("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .ok_or_else(|| HubError::Setting {
                var: "HF_HUB_CACHE".into(),
                reason: "neither HF_HUB_CACHE, HF_HOME nor HOME is set".into(),
            })?;
        let token = match set("HF_TOKEN") {
            Some(token) => Some(token.trim().to_string()),
            None => {
                let file = set("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")));
                file.and_then(|f| std::fs::read_to_string(f).ok())
                    .map(|t| t.trim().to_string())
            }
        }
        .filter(|t| !t.is_empty());
        let endpoint = set("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(HubError::Setting {
                var: "HF_ENDPOINT".into(),
                reason: format!("`{endpoint}` is not an http:// or https:// URL"),
            });
        }
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v));
        let timeout = match set(TIMEOUT_VAR) {
            None => DEFAULT_TIMEOUT,
            Some(text) => parse_timeout(&text).ok_or_else(|| HubError::Setting {
                var: TIMEOUT_VAR.into(),
                reason: format!("`{text}` is not a number of seconds between 0 and 3600"),
            })?,
        };
        Ok(HubSettings {
            endpoint,
            cache_dir,
            token,
            offline,
            timeout,
        })
    }
}

/// huggingface_hub's truth values for `HF_HUB_OFFLINE`.
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn parse_timeout(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0 && secs <= 3600.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<HubSettings, HubError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn cache_dir_follows_huggingface_hub_precedence() {
        let s = settings(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert!(!s.offline);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        let s = settings(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        let s = settings(&[("HOME", "/home/u"), ("HF_HOME", "/hf")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/hf/hub"));
        let s = settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/cache"));
        assert!(settings(&[]).is_err());
    }

    #[test]
    fn offline_endpoint_and_timeout() {
        for (value, offline) in [("1", true), ("TRUE", true), ("on", true), ("Yes", true)] {
            let s = settings(&[("HOME", "/h"), ("HF_HUB_OFFLINE", value)]).unwrap();
            assert_eq!(s.offline, offline, "{value}");
        }
        for value in ["0", "false", "no", "off", ""] {
            let s = settings(&[("HOME", "/h"), ("HF_HUB_OFFLINE", value)]).unwrap();
            assert!(!s.offline, "{value}");
        }
        let s = settings(&[("HOME", "/h"), ("HF_ENDPOINT", "http://127.0.0.1:9/")]).unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert!(settings(&[("HOME", "/h"), ("HF_ENDPOINT", "ftp://x")]).is_err());
        let s = settings(&[("HOME", "/h"), (TIMEOUT_VAR, "0.5")]).unwrap();
        assert_eq!(s.timeout, Duration::from_millis(500));
        for bad in ["0", "-1", "abc", "inf", "7200"] {
            let err = settings(&[("HOME", "/h"), (TIMEOUT_VAR, bad)]).unwrap_err();
            assert!(err.to_string().contains(TIMEOUT_VAR), "{err}");
        }
    }

    #[test]
    fn token_from_variable_then_token_files() {
        let dir = std::env::temp_dir().join(format!("ftbudget-hub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_from_home\n").unwrap();
        std::fs::write(dir.join("other"), "hf_from_path\n").unwrap();
        let home = dir.to_str().unwrap();
        let other = dir.join("other");
        let other = other.to_str().unwrap();
        let s = settings(&[("HF_HOME", home)]).unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_from_home"));
        let s = settings(&[("HF_HOME", home), ("HF_TOKEN_PATH", other)]).unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_from_path"));
        let s = settings(&[("HF_HOME", home), ("HF_TOKEN", "hf_var")]).unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_var"));
        assert!(!format!("{s:?}").contains("hf_var"));
        let s = settings(&[("HF_HOME", "/nonexistent-ftbudget")]).unwrap();
        assert_eq!(s.token, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

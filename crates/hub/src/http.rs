//! GET requests to the Hub's `resolve` URLs with ureq: the token, the timeouts, Range requests,
//! and the translation of statuses and transport failures into [`HubError`]s.

use crate::{HubError, HubId, HubSettings};
use std::io::Read;
use ureq::http::{HeaderMap, StatusCode};

/// The agent and what error messages need to name.
pub(crate) struct Client<'a> {
    agent: ureq::Agent,
    settings: &'a HubSettings,
    id: &'a HubId,
    /// What to tell the user when the endpoint cannot be reached.
    unreachable_advice: String,
}

/// A response whose status is a success (2xx), before its body is read.
pub(crate) struct Reply<'a> {
    pub status: u16,
    pub headers: HeaderMap,
    body: ureq::Body,
    client: &'a Client<'a>,
    file: String,
}

impl<'a> Client<'a> {
    pub fn new(settings: &'a HubSettings, id: &'a HubId, unreachable_advice: String) -> Self {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_resolve(Some(settings.timeout))
            .timeout_connect(Some(settings.timeout))
            .timeout_send_request(Some(settings.timeout))
            .timeout_recv_response(Some(settings.timeout))
            .timeout_per_read(Some(settings.timeout))
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("ftbudget/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&settings.endpoint) {
            // A server on this machine (a mirror, or a test) is never reached through a proxy.
            config = config.proxy(None);
        }
        Client {
            agent: config.build().into(),
            settings,
            id,
            unreachable_advice,
        }
    }

    /// The id with its revision, as errors name it.
    pub fn id_text(&self) -> String {
        self.id.to_string()
    }

    /// `{endpoint}/{org}/{name}/resolve/{revision}/{file}`.
    pub fn resolve_url(&self, revision: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.settings.endpoint,
            self.id.repo,
            percent_encode(revision),
            file.split('/')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join("/")
        )
    }

    /// GET `file` at `revision`, optionally only the bytes `range` (inclusive, as HTTP writes
    /// it). Statuses other than 2xx become errors.
    pub fn get(
        &self,
        revision: &str,
        file: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Reply<'_>, HubError> {
        let mut request = self.agent.get(&self.resolve_url(revision, file));
        if let Some(token) = &self.settings.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        if let Some((first, last)) = range {
            request = request.header("Range", &format!("bytes={first}-{last}"));
        }
        let response = request.call().map_err(|e| self.transport(file, e))?;
        let (parts, body) = response.into_parts();
        let status = parts.status;
        if !status.is_success() {
            return Err(self.status_error(file, status, &parts.headers));
        }
        Ok(Reply {
            status: status.as_u16(),
            headers: parts.headers,
            body,
            client: self,
            file: file.to_string(),
        })
    }

    fn status_error(&self, file: &str, status: StatusCode, headers: &HeaderMap) -> HubError {
        let id = self.id.to_string();
        let code = header(headers, "x-error-code").unwrap_or_default();
        let status = status.as_u16();
        match (status, code) {
            (401 | 403 | 404, "RepoNotFound") => HubError::RepoNotFound {
                id,
                endpoint: self.settings.endpoint.clone(),
                status,
            },
            (401 | 403, _) => HubError::Unauthorized {
                id,
                file: file.to_string(),
                status,
                page: format!("{}/{}", self.settings.endpoint, self.id.repo),
            },
            (404, _) => HubError::NotFound {
                id,
                file: file.to_string(),
            },
            _ => HubError::Status {
                id,
                file: file.to_string(),
                status,
            },
        }
    }

    fn transport(&self, file: &str, error: ureq::Error) -> HubError {
        let id = self.id.to_string();
        let file = file.to_string();
        let unreachable = |reason: String| HubError::Unreachable {
            id: id.clone(),
            endpoint: self.settings.endpoint.clone(),
            reason,
            advice: self.unreachable_advice.clone(),
        };
        match error {
            ureq::Error::Timeout(_) => self.timeout(file),
            ureq::Error::HostNotFound => unreachable("host not found".into()),
            ureq::Error::ConnectionFailed => unreachable("connection failed".into()),
            ureq::Error::Io(e) => match io_timeout(&e) {
                true => self.timeout(file),
                false => unreachable(e.to_string()),
            },
            other => HubError::Transport {
                id,
                file,
                reason: other.to_string(),
            },
        }
    }

    fn timeout(&self, file: String) -> HubError {
        HubError::Timeout {
            id: self.id.to_string(),
            file,
            endpoint: self.settings.endpoint.clone(),
            secs: self.settings.timeout.as_secs_f64(),
        }
    }
}

impl Reply<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The whole body, at most `max` bytes; a body shorter than its Content-Length, or a
    /// connection closed in the middle, is [`HubError::Truncated`].
    pub fn read_all(self, max: u64) -> Result<Vec<u8>, HubError> {
        let expected = self.content_length();
        if let Some(n) = expected.filter(|&n| n > max) {
            return Err(self.body_error(format!(
                "the body is {n} bytes, more than the {max} expected"
            )));
        }
        let (file, client) = (self.file.clone(), self.client);
        let mut bytes = Vec::new();
        let read = self
            .body
            .into_with_config()
            .limit(max.saturating_add(1))
            .reader()
            .read_to_end(&mut bytes);
        let got = bytes.len() as u64;
        let truncated = |expected: Option<u64>| HubError::Truncated {
            id: client.id.to_string(),
            file: file.clone(),
            got,
            expected: expected.unwrap_or(got + 1),
        };
        match read {
            Ok(_) if got > max => Err(HubError::Transport {
                id: client.id.to_string(),
                file,
                reason: format!("the body is longer than the {max} bytes expected"),
            }),
            Ok(_) => match expected {
                Some(n) if n != got => Err(truncated(Some(n))),
                _ => Ok(bytes),
            },
            Err(e) if io_timeout(&e) => Err(client.timeout(file)),
            Err(e) if is_disconnect(&e) => Err(truncated(expected)),
            Err(e) => Err(HubError::Transport {
                id: client.id.to_string(),
                file,
                reason: e.to_string(),
            }),
        }
    }

    /// The first `n` bytes of the body; the rest is never read (the connection is dropped).
    pub fn read_prefix(self, n: u64) -> Result<Vec<u8>, HubError> {
        let (file, client) = (self.file.clone(), self.client);
        let mut bytes = Vec::new();
        let read = self
            .body
            .into_with_config()
            .limit(u64::MAX)
            .reader()
            .take(n)
            .read_to_end(&mut bytes);
        match read {
            Ok(_) if bytes.len() as u64 == n => Ok(bytes),
            Ok(_) => Err(HubError::Truncated {
                id: client.id.to_string(),
                file,
                got: bytes.len() as u64,
                expected: n,
            }),
            Err(e) if io_timeout(&e) => Err(client.timeout(file)),
            Err(e) if is_disconnect(&e) => Err(HubError::Truncated {
                id: client.id.to_string(),
                file,
                got: bytes.len() as u64,
                expected: n,
            }),
            Err(e) => Err(HubError::Transport {
                id: client.id.to_string(),
                file,
                reason: e.to_string(),
            }),
        }
    }

    pub fn body_error(&self, reason: String) -> HubError {
        HubError::Transport {
            id: self.client.id.to_string(),
            file: self.file.clone(),
            reason,
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A read that failed because a ureq timeout fired (ureq wraps its own errors in io::Error).
fn io_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| match u {
                ureq::Error::Timeout(_) => true,
                ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
                _ => false,
            })
}

/// The peer closed the connection before the body ended.
fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    let kind_is = |k| matches!(k, UnexpectedEof | ConnectionReset | ConnectionAborted);
    kind_is(e.kind())
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| match u {
                ureq::Error::Io(io) => kind_is(io.kind()),
                ureq::Error::Protocol(_) => true,
                _ => false,
            })
}

/// Whether the endpoint's host is this machine.
fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encode everything but RFC 3986's unreserved characters, as huggingface_hub quotes a
/// revision (`refs/pr/1` -> `refs%2Fpr%2F1`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints() {
        for e in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://[::1]:9/",
            "http://127.1.2.3",
        ] {
            assert!(is_loopback(e), "{e}");
        }
        for e in [
            "https://huggingface.co",
            "http://10.0.0.1:80",
            "http://[2001:db8::1]",
        ] {
            assert!(!is_loopback(e), "{e}");
        }
    }

    #[test]
    fn revisions_are_quoted_like_huggingface_hub() {
        assert_eq!(percent_encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("v1.0_rc-2"), "v1.0_rc-2");
    }
}

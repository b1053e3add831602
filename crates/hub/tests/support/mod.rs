//! A fake Hugging Face Hub on 127.0.0.1 (port 0), started by each test: the `resolve` URL layout
//! (`/{org}/{name}/resolve/{revision}/{file}`), `X-Repo-Commit` and `ETag` headers, LFS files
//! redirected (302) to a CDN path that serves Range requests (206), gated repositories (401
//! without a token, 403 with a wrong one), unknown repositories (401 `RepoNotFound`), missing
//! files and revisions (404), and misbehaving servers: one that never answers, one that closes
//! the connection mid-body, one that serves HTML, one that ignores Range. Every request is
//! logged with the number of body bytes sent. Shared by crates/hub and crates/cli tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Who may read a repository.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    Public,
    /// 401 without a token, 403 with another token.
    Gated {
        token: String,
    },
}

/// How the server misbehaves for every file of a repository.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    Normal,
    /// Read the request, never answer (the connection is held for 30 s).
    Stall,
    /// Announce the full Content-Length, send this many bytes, close.
    Truncate(usize),
    /// Announce the full Content-Length, send this many bytes, then hold the connection (30 s).
    StallAfter(usize),
    /// Answer every file with an HTML page (a captive portal, a wrong endpoint).
    Html,
    /// Answer Range requests with the whole file (200).
    IgnoreRange,
}

#[derive(Clone, Debug)]
pub struct Repo {
    pub commit: String,
    pub branches: Vec<String>,
    pub files: HashMap<String, Vec<u8>>,
    pub access: Access,
    pub behaviour: Behaviour,
}

impl Repo {
    pub fn new(commit_seed: u8) -> Self {
        Repo {
            commit: format!("{commit_seed:02x}").repeat(20),
            branches: vec!["main".into()],
            files: HashMap::new(),
            access: Access::Public,
            behaviour: Behaviour::Normal,
        }
    }

    pub fn file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.insert(name.to_string(), bytes.into());
        self
    }

    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    pub fn behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    pub body_bytes: usize,
}

#[derive(Default)]
struct State {
    repos: Mutex<HashMap<String, Repo>>,
    log: Mutex<Vec<Logged>>,
}

pub struct FakeHub {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeHub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || handle(stream, &state));
            }
        });
        FakeHub { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add(&self, id: &str, repo: Repo) {
        self.state
            .repos
            .lock()
            .unwrap()
            .insert(id.to_string(), repo);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// Body bytes sent for paths ending with `suffix`.
    pub fn bytes_sent(&self, suffix: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.path.ends_with(suffix))
            .map(|l| l.body_bytes)
            .sum()
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn refused_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// The ETag the fake Hub gives a file: a 64-bit FNV-1a hash in hex, twice.
pub fn etag_of(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:016x}", h.rotate_left(17))
}

/// A fresh, empty folder under the target's temporary directory.
pub fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file (not folder) under `dir`, symlinks included.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

struct Request {
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Request { path, headers })
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (or hold the connection, with `stall`).
    cut: Option<usize>,
    /// Hold the connection for 30 s before closing it (after the `cut` bytes, if any).
    stall: bool,
}

impl Answer {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut: None,
            stall: false,
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn error(status: u16, code: &str) -> Self {
        Answer::new(status, format!("{{\"error\":\"{code}\"}}")).header("X-Error-Code", code)
    }
}

fn handle(mut stream: TcpStream, state: &State) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    let answer = route(&request, state);
    if answer.stall && answer.cut.is_none() {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let reason = match answer.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let sent = answer
        .cut
        .unwrap_or(answer.body.len())
        .min(answer.body.len());
    // Logged before the answer is written, so a client that has read it finds it in the log.
    state.log.lock().unwrap().push(Logged {
        path: request.path.clone(),
        range: request.headers.get("range").cloned(),
        authorization: request.headers.get("authorization").cloned(),
        status: answer.status,
        body_bytes: sent,
    });
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer.body[..sent]);
    let _ = stream.flush();
    if answer.stall {
        std::thread::sleep(Duration::from_secs(30));
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn route(request: &Request, state: &State) -> Answer {
    let repos = state.repos.lock().unwrap();
    // The CDN a LFS file redirects to: /cdn/{org}/{name}/{file}.
    if let Some(rest) = request.path.strip_prefix("/cdn/") {
        let mut parts = rest.splitn(3, '/');
        let (org, name, file) = (parts.next(), parts.next(), parts.next());
        let (Some(org), Some(name), Some(file)) = (org, name, file) else {
            return Answer::new(404, "");
        };
        let Some(repo) = repos.get(&format!("{org}/{name}")) else {
            return Answer::new(404, "");
        };
        let Some(bytes) = repo.files.get(file) else {
            return Answer::new(404, "");
        };
        return serve(request, repo, bytes).header("ETag", format!("\"{}\"", etag_of(bytes)));
    }
    let segments: Vec<&str> = request
        .path
        .trim_start_matches('/')
        .splitn(5, '/')
        .collect();
    let [org, name, "resolve", revision, file] = segments[..] else {
        return Answer::new(404, "not a resolve URL");
    };
    let id = format!("{org}/{name}");
    let revision = revision.replace("%2F", "/");
    let Some(repo) = repos.get(&id) else {
        return Answer::error(401, "RepoNotFound");
    };
    if let Access::Gated { token } = &repo.access {
        match request.headers.get("authorization") {
            None => return Answer::error(401, "GatedRepo"),
            Some(auth) if *auth != format!("Bearer {token}") => {
                return Answer::error(403, "GatedRepo");
            }
            Some(_) => {}
        }
    }
    if revision != repo.commit && !repo.branches.contains(&revision) {
        return Answer::error(404, "RevisionNotFound");
    }
    let Some(bytes) = repo.files.get(file) else {
        return Answer::error(404, "EntryNotFound").header("X-Repo-Commit", repo.commit.clone());
    };
    if file.ends_with(".safetensors") && repo.behaviour == Behaviour::Normal {
        // LFS: the Hub redirects to its CDN; the commit and the LFS etag are on the redirect.
        return Answer::new(302, "")
            .header("Location", format!("/cdn/{id}/{file}"))
            .header("X-Repo-Commit", repo.commit.clone())
            .header("X-Linked-Etag", format!("\"{}\"", etag_of(bytes)));
    }
    serve(request, repo, bytes)
        .header("X-Repo-Commit", repo.commit.clone())
        .header("ETag", format!("\"{}\"", etag_of(bytes)))
}

/// A file's bytes, honouring a Range header (unless the repository ignores ranges), with the
/// repository's misbehaviour applied.
fn serve(request: &Request, repo: &Repo, bytes: &[u8]) -> Answer {
    match &repo.behaviour {
        Behaviour::Stall => {
            let mut a = Answer::new(200, "");
            a.stall = true;
            return a;
        }
        Behaviour::Html => {
            return Answer::new(200, "<html><body>Sign in to the network</body></html>")
                .header("Content-Type", "text/html");
        }
        Behaviour::Truncate(n) => {
            let mut a = Answer::new(200, bytes.to_vec());
            a.cut = Some(*n);
            return a;
        }
        Behaviour::StallAfter(n) => {
            let mut a = Answer::new(200, bytes.to_vec());
            a.cut = Some(*n);
            a.stall = true;
            return a;
        }
        Behaviour::Normal | Behaviour::IgnoreRange => {}
    }
    let range = request
        .headers
        .get("range")
        .filter(|_| repo.behaviour != Behaviour::IgnoreRange);
    let Some(range) = range else {
        return Answer::new(200, bytes.to_vec());
    };
    let parsed = range.strip_prefix("bytes=").and_then(|r| {
        let (a, b) = r.split_once('-')?;
        Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
    });
    match parsed {
        Some((first, last)) if first <= last && first < bytes.len() => {
            let last = last.min(bytes.len() - 1);
            Answer::new(206, bytes[first..=last].to_vec()).header(
                "Content-Range",
                format!("bytes {first}-{last}/{}", bytes.len()),
            )
        }
        _ => Answer::new(416, "").header("Content-Range", format!("bytes */{}", bytes.len())),
    }
}

//! `resolve` and `checkpoint_headers` against a fake Hub on 127.0.0.1 started by each test, with
//! the cache in a fresh folder: downloads land in huggingface_hub's layout, the cache is read
//! offline, every failure is one typed error naming the id, and nothing half-written (or
//! header-only) is ever left in the cache.

mod support;

use ftbudget_hub::{
    HubError, HubId, HubSettings, Snapshot, Source, checkpoint::SafetensorsHeader,
    checkpoint_headers, resolve,
};
use safetensors::{Dtype, tensor::TensorView};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Access, Behaviour, FakeHub, Repo, etag_of, files_under, fresh_dir};

const CONFIG: &[u8] = br#"{"model_type": "llama", "hidden_size": 64}"#;

fn tmp(name: &str) -> PathBuf {
    fresh_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!("hub-{name}"),
    )
}

fn settings(endpoint: &str, cache: &Path) -> HubSettings {
    HubSettings {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        timeout: Duration::from_secs(10),
    }
}

fn id(text: &str) -> HubId {
    HubId::parse(text).unwrap()
}

#[test]
fn a_download_lands_in_huggingface_hub_layout_and_is_then_read_offline() {
    let hub = FakeHub::start();
    hub.add("org/model", Repo::new(0xab).file("config.json", CONFIG));
    let cache = tmp("download");
    let mut s = settings(&hub.endpoint(), &cache);
    s.token = Some("hf_test".into());
    let snap = resolve(&id("org/model"), &s).unwrap();
    let commit = "ab".repeat(20);
    assert_eq!(snap.commit, commit);
    assert_eq!(snap.source, Source::Downloaded);
    assert_eq!(snap.id.revision, "main");
    let repo = cache.join("models--org--model");
    assert_eq!(snap.dir, repo.join("snapshots").join(&commit));
    assert_eq!(std::fs::read(snap.config_path()).unwrap(), CONFIG);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );
    let etag = etag_of(CONFIG);
    assert_eq!(
        std::fs::read(repo.join("blobs").join(&etag)).unwrap(),
        CONFIG
    );
    assert_eq!(
        std::fs::read_link(snap.config_path()).unwrap(),
        PathBuf::from(format!("../../blobs/{etag}"))
    );
    let log = hub.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/org/model/resolve/main/config.json");
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer hf_test"));
    // Exactly three files: the blob, the snapshot link, the ref; no temporary file.
    assert_eq!(files_under(&cache).len(), 3, "{:?}", files_under(&cache));

    // Cached: no request, online or offline.
    let again = resolve(&id("org/model"), &s).unwrap();
    assert_eq!(
        (again.source, again.commit.as_str()),
        (Source::Cache, commit.as_str())
    );
    s.offline = true;
    let offline = resolve(&id("org/model@main"), &s).unwrap();
    assert_eq!(offline.dir, snap.dir);
    assert_eq!(hub.log().len(), 1);
}

/// The layout huggingface_hub writes, made by hand: a branch ref, a tag ref, a commit.
fn prepopulate(cache: &Path) -> String {
    let repo = cache.join("models--Qwen--Qwen3-8B");
    let commit = "0123456789abcdef0123456789abcdef01234567".to_string();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(&commit)).unwrap();
    std::fs::write(repo.join("refs/main"), &commit).unwrap();
    std::fs::write(repo.join("refs/v1.0"), format!("{commit}\n")).unwrap();
    std::fs::write(repo.join("blobs/deadbeef"), CONFIG).unwrap();
    std::os::unix::fs::symlink(
        "../../blobs/deadbeef",
        repo.join("snapshots").join(&commit).join("config.json"),
    )
    .unwrap();
    commit
}

#[test]
fn offline_mode_reads_a_prepopulated_cache_and_never_connects() {
    let cache = tmp("offline");
    let commit = prepopulate(&cache);
    let mut s = settings(&support::refused_endpoint(), &cache);
    s.offline = true;
    for text in [
        "Qwen/Qwen3-8B",
        "Qwen/Qwen3-8B@v1.0",
        &format!("Qwen/Qwen3-8B@{commit}"),
    ] {
        let snap = resolve(&id(text), &s).unwrap();
        assert_eq!(snap.commit, commit, "{text}");
        assert_eq!(snap.source, Source::Cache);
        assert_eq!(std::fs::read(snap.config_path()).unwrap(), CONFIG);
    }
    let err = resolve(&id("Qwen/Qwen3-8B@dev"), &s).unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("Qwen/Qwen3-8B@dev: not in the Hugging Face cache"),
        "{text}"
    );
    assert!(
        text.contains("HF_HUB_OFFLINE") && text.contains("config.json path"),
        "{text}"
    );
    // A dangling snapshot link is not a cached file.
    std::fs::remove_file(cache.join("models--Qwen--Qwen3-8B/blobs/deadbeef")).unwrap();
    assert!(matches!(
        resolve(&id("Qwen/Qwen3-8B"), &s),
        Err(HubError::Offline { .. })
    ));
}

#[test]
fn a_commit_revision_is_fetched_by_commit_and_writes_no_ref() {
    let hub = FakeHub::start();
    let repo = Repo::new(0x5c).file("config.json", CONFIG);
    let commit = repo.commit.clone();
    hub.add("org/model", repo);
    let cache = tmp("by-commit");
    let s = settings(&hub.endpoint(), &cache);
    let snap = resolve(&id(&format!("org/model@{commit}")), &s).unwrap();
    assert_eq!(snap.commit, commit);
    assert_eq!(
        hub.log()[0].path,
        format!("/org/model/resolve/{commit}/config.json")
    );
    assert!(!cache.join("models--org--model/refs").exists());
    // A revision with a slash is quoted in the URL and nested under refs/.
    let hub2 = FakeHub::start();
    let mut repo = Repo::new(0x77).file("config.json", CONFIG);
    repo.branches.push("refs/pr/4".into());
    hub2.add("org/model", repo);
    let s = settings(&hub2.endpoint(), &cache);
    let snap = resolve(&id("org/model@refs/pr/4"), &s).unwrap();
    assert_eq!(
        hub2.log()[0].path,
        "/org/model/resolve/refs%2Fpr%2F4/config.json"
    );
    let ref_file = cache.join("models--org--model/refs/refs/pr/4");
    assert_eq!(std::fs::read_to_string(ref_file).unwrap(), snap.commit);
}

/// The error, checked to be one line that names the id; the cache must stay empty.
fn failure(hub: &FakeHub, text: &str, token: Option<&str>, timeout: Duration) -> HubError {
    let cache = tmp(&format!("fail-{}", text.replace(['/', '@'], "-")));
    let mut s = settings(&hub.endpoint(), &cache);
    s.token = token.map(str::to_string);
    s.timeout = timeout;
    let err = resolve(&id(text), &s).unwrap_err();
    let message = err.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains(text) || message.contains(&id(text).to_string()),
        "{message}"
    );
    assert!(files_under(&cache).is_empty(), "{:?}", files_under(&cache));
    err
}

#[test]
fn gated_and_missing_models_say_what_to_do() {
    let hub = FakeHub::start();
    hub.add(
        "meta-llama/Llama-2-7b-hf",
        Repo::new(1)
            .file("config.json", CONFIG)
            .access(Access::Gated {
                token: "hf_ok".into(),
            }),
    );
    hub.add("org/model", Repo::new(2).file("config.json", CONFIG));
    let t = Duration::from_secs(10);
    for (token, status) in [(None, 401), (Some("hf_wrong"), 403)] {
        let err = failure(&hub, "meta-llama/Llama-2-7b-hf", token, t);
        assert!(
            matches!(err, HubError::Unauthorized { status: s, .. } if s == status),
            "{err}"
        );
        let m = err.to_string();
        assert!(
            m.contains("gated or private") && m.contains("HF_TOKEN"),
            "{m}"
        );
        assert!(m.contains("accept the licence on http://"), "{m}");
    }
    let cache = tmp("gated-ok");
    let mut s = settings(&hub.endpoint(), &cache);
    s.token = Some("hf_ok".into());
    resolve(&id("meta-llama/Llama-2-7b-hf"), &s).unwrap();

    let err = failure(&hub, "nobody/nothing", None, t);
    assert!(
        matches!(err, HubError::RepoNotFound { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("check the id"), "{err}");
    let err = failure(&hub, "org/model@v9", None, t);
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("check the id and the revision"),
        "{err}"
    );
    hub.add("org/empty", Repo::new(3));
    let err = failure(&hub, "org/empty", None, t);
    assert!(
        err.to_string().contains("config.json not found (HTTP 404)"),
        "{err}"
    );
}

#[test]
fn a_slow_server_times_out_cleanly() {
    let hub = FakeHub::start();
    hub.add(
        "org/slow",
        Repo::new(4)
            .file("config.json", CONFIG)
            .behaviour(Behaviour::Stall),
    );
    let err = failure(&hub, "org/slow", None, Duration::from_millis(300));
    assert!(matches!(err, HubError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("FTBUDGET_HUB_TIMEOUT_SECS"),
        "{err}"
    );
}

#[test]
fn a_truncated_body_writes_nothing() {
    let hub = FakeHub::start();
    hub.add(
        "org/cut",
        Repo::new(5)
            .file("config.json", CONFIG)
            .behaviour(Behaviour::Truncate(10)),
    );
    let err = failure(&hub, "org/cut", None, Duration::from_secs(10));
    assert!(
        matches!(err, HubError::Truncated { got: 10, expected, .. } if expected == CONFIG.len() as u64),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was written"), "{err}");
}

#[test]
fn a_non_json_body_writes_nothing() {
    let hub = FakeHub::start();
    hub.add(
        "org/portal",
        Repo::new(6)
            .file("config.json", CONFIG)
            .behaviour(Behaviour::Html),
    );
    let err = failure(&hub, "org/portal", None, Duration::from_secs(10));
    assert!(matches!(err, HubError::NotJson { .. }), "{err}");
}

#[test]
fn no_server_means_go_online_or_pass_a_path() {
    let cache = tmp("refused");
    let s = settings(&support::refused_endpoint(), &cache);
    let err = resolve(&id("org/model"), &s).unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    let m = err.to_string();
    assert!(
        m.starts_with("org/model@main: cannot reach http://127.0.0.1:"),
        "{m}"
    );
    assert!(m.contains("go online, or pass a config.json path"), "{m}");
}

/// A small real safetensors file (f32 data), and the header length it starts with.
fn safetensors_file(tensors: &[(&str, Vec<usize>)]) -> (Vec<u8>, u64) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| vec![7u8; shape.iter().product::<usize>() * 4])
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap();
            (name.to_string(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, &None).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    (bytes, n)
}

fn expected_header(file: &str, bytes: &[u8], n: u64) -> SafetensorsHeader {
    SafetensorsHeader {
        file: file.to_string(),
        header: bytes[8..8 + n as usize].to_vec(),
        file_len: bytes.len() as u64,
    }
}

fn downloaded_snapshot(hub: &FakeHub, name: &str, repo: Repo) -> (Snapshot, HubSettings, PathBuf) {
    hub.add(name, repo.file("config.json", CONFIG));
    let cache = tmp(&name.replace('/', "-"));
    let s = settings(&hub.endpoint(), &cache);
    let snap = resolve(&id(name), &s).unwrap();
    (snap, s, cache)
}

#[test]
fn sharded_headers_come_by_range_requests_and_never_the_weights() {
    let (a, na) = safetensors_file(&[("w.0", vec![64, 64]), ("n.0", vec![64])]);
    let (b, nb) = safetensors_file(&[("w.1", vec![64, 96])]);
    let index = br#"{"metadata":{},"weight_map":{"w.0":"m-1.safetensors","n.0":"m-1.safetensors","w.1":"m-2.safetensors"}}"#;
    let hub = FakeHub::start();
    let repo = Repo::new(8)
        .file("model.safetensors.index.json", &index[..])
        .file("m-1.safetensors", a.clone())
        .file("m-2.safetensors", b.clone());
    let (snap, s, cache) = downloaded_snapshot(&hub, "org/sharded", repo);
    let headers = checkpoint_headers(&snap, &s).unwrap();
    assert_eq!(headers.source, Source::Downloaded);
    assert_eq!(
        headers.files,
        [
            expected_header("m-1.safetensors", &a, na),
            expected_header("m-2.safetensors", &b, nb)
        ]
    );
    // Only the 8-byte lengths and the headers crossed the wire, by commit, through the redirect.
    assert_eq!(hub.bytes_sent("m-1.safetensors") as u64, 8 + na);
    assert_eq!(hub.bytes_sent("m-2.safetensors") as u64, 8 + nb);
    let commit = "08".repeat(20);
    let ranges: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|l| l.path.starts_with("/cdn/org/sharded/m-1"))
        .map(|l| (l.status, l.range.unwrap_or_default()))
        .collect();
    assert_eq!(
        ranges,
        [
            (206, "bytes=0-7".to_string()),
            (206, format!("bytes=8-{}", 7 + na))
        ]
    );
    assert!(
        hub.log().iter().any(
            |l| l.path == format!("/org/sharded/resolve/{commit}/model.safetensors.index.json")
        )
    );
    // Header-only data is never stored in the cache: config.json's three files only.
    let files = files_under(&cache);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.to_string_lossy().contains("safetensors"))
    );
}

#[test]
fn without_an_index_the_single_file_is_read_even_from_a_server_ignoring_ranges() {
    let (bytes, n) = safetensors_file(&[("w", vec![8, 4])]);
    for behaviour in [Behaviour::Normal, Behaviour::IgnoreRange] {
        let hub = FakeHub::start();
        let repo = Repo::new(9)
            .file("model.safetensors", bytes.clone())
            .behaviour(behaviour.clone());
        let (snap, s, _) = downloaded_snapshot(&hub, "org/single", repo);
        let headers = checkpoint_headers(&snap, &s).unwrap();
        assert_eq!(
            headers.files,
            [expected_header("model.safetensors", &bytes, n)]
        );
    }
}

#[test]
fn cached_checkpoint_files_are_read_offline_and_missing_ones_need_the_network() {
    let (bytes, n) = safetensors_file(&[("w", vec![8, 4])]);
    let hub = FakeHub::start();
    let (snap, mut s, _) = downloaded_snapshot(&hub, "org/local", Repo::new(10));
    s.offline = true;
    let err = checkpoint_headers(&snap, &s).unwrap_err();
    assert!(matches!(err, HubError::OfflineCheckpoint { .. }), "{err}");
    std::fs::write(snap.dir.join("model.safetensors"), &bytes).unwrap();
    let headers = checkpoint_headers(&snap, &s).unwrap();
    assert_eq!(headers.source, Source::Cache);
    assert_eq!(
        headers.files,
        [expected_header("model.safetensors", &bytes, n)]
    );
}

#[test]
fn a_lying_header_length_is_an_error_not_a_download() {
    let mut bytes = safetensors_file(&[("w", vec![8, 4])]).0;
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let hub = FakeHub::start();
    let repo = Repo::new(11).file("model.safetensors", bytes);
    let (snap, s, _) = downloaded_snapshot(&hub, "org/liar", repo);
    let err = checkpoint_headers(&snap, &s).unwrap_err();
    assert!(matches!(err, HubError::Safetensors { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("org/liar@main: model.safetensors: header length"),
        "{err}"
    );
    assert_eq!(hub.bytes_sent("model.safetensors"), 8);
}

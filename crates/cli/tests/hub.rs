//! `ftbudget estimate --model org/name` end to end against a fake Hub on 127.0.0.1 (HF_ENDPOINT
//! always points at it, or at a closed port; the internet is never contacted): the counts by id
//! equal peft's records for the same config.json and the figures of that file read from disk;
//! the cache is then read offline; `--exact-from-hub` counts from the checkpoint's headers
//! fetched by range requests; every failure is one `error:` line with exit code 2.

#[path = "../../hub/tests/support/mod.rs"]
mod support;

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{Access, Behaviour, FakeHub, Repo, files_under, fresh_dir, refused_endpoint};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("fixtures/peft/configs").join(name)).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    fresh_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!("cli-hub-{name}"),
    )
}

/// `ftbudget` with a Hugging Face environment of its own: the cache and HF_HOME in `home`, the
/// endpoint given, no token unless the test sets one, online.
fn ftbudget(endpoint: &str, home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("ftbudget").unwrap();
    for var in [
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "FTBUDGET_HUB_TIMEOUT_SECS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HOME", home);
    cmd
}

/// Run `estimate --format json`; the JSON document and stderr.
fn estimate(cmd: Command, model: &str, regime: &str) -> (Value, String) {
    estimate_with(cmd, model, regime, &[])
}

/// `estimate --format json --seq 512` (inside every model's position table) with `extra` flags.
fn estimate_with(mut cmd: Command, model: &str, regime: &str, extra: &[&str]) -> (Value, String) {
    let out = cmd
        .args([
            "estimate", "--format", "json", "--seq", "512", "--regime", regime, "--model", model,
        ])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// Expect exit code 2 and one stderr line holding every needle.
fn fails(mut cmd: Command, args: &[&str], needles: &[&str]) {
    let out = cmd.arg("estimate").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("SEEN {stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected `{needle}` in {stderr}");
    }
}

/// (trainable, all, base) of a peft record in fixtures/peft/generated_counts.json.
fn peft_record(id: &str) -> (u64, u64, u64) {
    let path = repo_root().join("fixtures/peft/generated_counts.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let r = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no record {id}"));
    let n = |k: &str| r[k].as_u64().unwrap();
    (n("trainable"), n("all_params"), n("base_params"))
}

fn counts(doc: &Value) -> (u64, u64, u64) {
    let row = &doc["rows"][0];
    let n = |k: &str| row[k].as_u64().unwrap();
    (n("trainable_params"), n("all_params"), n("base_params"))
}

#[test]
fn llama_2_7b_by_id_counts_like_peft_and_like_its_config_on_disk() {
    let hub = FakeHub::start();
    let repo = Repo::new(0x1a).file("config.json", fixture("llama-2-7b.json"));
    let commit = repo.commit.clone();
    hub.add("meta-llama/Llama-2-7b-hf", repo);
    let home = tmp("llama");
    let regime = "lora:r=8,targets=q_proj+v_proj";
    let (doc, stderr) = estimate(
        ftbudget(&hub.endpoint(), &home),
        "meta-llama/Llama-2-7b-hf",
        regime,
    );
    // peft: Llama-2-7B has 6,738,415,616 parameters; r=8 on q and v trains 4,194,304.
    assert_eq!(doc["model"]["total_params"], 6_738_415_616u64);
    assert_eq!(counts(&doc), (4_194_304, 6_742_609_920, 6_738_415_616));
    assert_eq!(doc["model"]["name"], "meta-llama/Llama-2-7b-hf@main");
    assert!(
        stderr.contains(&format!(
            "model: meta-llama/Llama-2-7b-hf@main (commit {commit}"
        )),
        "{stderr}"
    );
    // Every figure equals the same config.json read from disk.
    let path = repo_root().join("fixtures/peft/configs/llama-2-7b.json");
    let (disk, disk_stderr) = estimate(
        ftbudget(&refused_endpoint(), &home),
        path.to_str().unwrap(),
        regime,
    );
    assert_eq!(doc["rows"], disk["rows"]);
    assert_eq!(disk_stderr, "");
    // The cache is in huggingface_hub's layout and is read offline, without any server.
    let cached = home.join("hub/models--meta-llama--Llama-2-7b-hf");
    assert_eq!(
        std::fs::read_to_string(cached.join("refs/main")).unwrap(),
        commit
    );
    let mut offline = ftbudget(&refused_endpoint(), &home);
    offline.env("HF_HUB_OFFLINE", "1");
    let (again, stderr) = estimate(offline, "meta-llama/Llama-2-7b-hf@main", regime);
    assert_eq!(again["rows"], doc["rows"]);
    assert!(stderr.contains("from the Hugging Face cache"), "{stderr}");
    assert_eq!(hub.log().len(), 1);
}

#[test]
fn every_family_read_today_works_by_id() {
    let hub = FakeHub::start();
    let home = tmp("families");
    let cases = [
        ("gpt2.json", "gpt2|lora:r=8,targets=c_attn"),
        ("mistral-7b.json", "mistral-7b|lora:r=16,targets=attn"),
        ("qwen2-7b.json", "qwen2-7b|lora:r=16,targets=attn"),
        ("gemma-2b.json", "gemma-2b|lora:r=16,targets=attn"),
        ("phi-3-mini.json", "phi-3-mini|lora:r=8,targets=qkv_proj"),
        ("mixtral-8x7b.json", "mixtral-8x7b|lora:r=16,targets=attn"),
        ("llama-3-8b.json", "llama-3-8b|lora:r=16,targets=attn"),
    ];
    for (i, (file, record)) in cases.iter().enumerate() {
        let id = format!("org/{}", file.trim_end_matches(".json"));
        hub.add(
            &id,
            Repo::new(i as u8 + 1).file("config.json", fixture(file)),
        );
        let regime = record.split_once('|').unwrap().1;
        let (doc, _) = estimate(ftbudget(&hub.endpoint(), &home), &id, regime);
        assert_eq!(counts(&doc), peft_record(record), "{id}");
    }
}

/// A safetensors file with zero data, written by hand: the length, the JSON header (padded to 8
/// bytes with spaces), then the data.
fn safetensors_bytes(tensors: &[(String, Vec<u64>)]) -> Vec<u8> {
    let mut offset = 0u64;
    let mut entries = serde_json::Map::new();
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * 4;
        entries.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = Value::Object(entries).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.resize(out.len() + offset as usize, 0);
    out
}

/// transformers' LlamaForCausalLM tensors for fixtures/peft/configs/llama-tiny-gqa.json.
fn llama_tiny_gqa() -> Vec<(String, Vec<u64>)> {
    let (h, i, kv, vocab) = (64, 96, 32, 100);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
    for l in 0..2 {
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            t.push((format!("model.layers.{l}.{name}"), shape));
        }
    }
    t.push(("model.norm.weight".into(), vec![h]));
    t.push(("lm_head.weight".into(), vec![vocab, h]));
    t
}

#[test]
fn exact_from_hub_counts_the_checkpoint_headers_without_the_weights() {
    let tensors = llama_tiny_gqa();
    let (a, b) = tensors.split_at(10);
    let (shard_a, shard_b) = (safetensors_bytes(a), safetensors_bytes(b));
    let weight_map: serde_json::Map<String, Value> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let shard = if i < 10 { 1 } else { 2 };
            (
                name.clone(),
                Value::from(format!("model-0000{shard}-of-00002.safetensors")),
            )
        })
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string();
    let hub = FakeHub::start();
    hub.add(
        "org/llama-tiny",
        Repo::new(0x42)
            .file("config.json", fixture("llama-tiny-gqa.json"))
            .file("model.safetensors.index.json", index)
            .file("model-00001-of-00002.safetensors", shard_a.clone())
            .file("model-00002-of-00002.safetensors", shard_b.clone()),
    );
    let home = tmp("exact");
    for regime in [
        "lora:r=16",
        "dora:r=8",
        "lora:r=8,targets=q_proj+v_proj,modules_to_save=lm_head",
    ] {
        let cmd = ftbudget(&hub.endpoint(), &home);
        let (doc, stderr) = estimate_with(cmd, "org/llama-tiny", regime, &["--exact-from-hub"]);
        assert_eq!(
            counts(&doc),
            peft_record(&format!("llama-tiny-gqa|{regime}")),
            "{regime}"
        );
        assert!(
            stderr.contains("checkpoint: 21 tensors in 2 safetensors file(s)"),
            "{stderr}"
        );
    }
    // Per run and shard: the 8-byte length and the header, never a weight byte.
    let header_len = |f: &[u8]| 8 + u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
    assert_eq!(
        hub.bytes_sent("00001-of-00002.safetensors"),
        3 * header_len(&shard_a)
    );
    assert_eq!(
        hub.bytes_sent("00002-of-00002.safetensors"),
        3 * header_len(&shard_b)
    );
    // Only config.json went to the cache.
    let files = files_under(&home.join("hub"));
    assert!(
        files
            .iter()
            .all(|f| !f.to_string_lossy().contains("safetensors")),
        "{files:?}"
    );
    // Offline, the headers are not cached: a clear error.
    let mut offline = ftbudget(&refused_endpoint(), &home);
    offline.env("HF_HUB_OFFLINE", "1");
    fails(
        offline,
        &["--exact-from-hub", "--model", "org/llama-tiny"],
        &["org/llama-tiny@main", "HF_HUB_OFFLINE", "--exact-from-hub"],
    );
    fails(
        ftbudget(&refused_endpoint(), &home),
        &["--exact-from-hub", "--model", "llama-2-7b"],
        &["--exact-from-hub", "not a Hub id"],
    );
}

#[test]
fn an_existing_local_path_is_read_as_a_path() {
    let home = tmp("local-path");
    let dir = home.join("org/name");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), fixture("llama-2-7b.json")).unwrap();
    let mut cmd = ftbudget(&refused_endpoint(), &home);
    cmd.current_dir(&home).env("HF_HUB_OFFLINE", "1");
    let (doc, stderr) = estimate(cmd, "org/name", "lora:r=8,targets=q_proj+v_proj");
    assert_eq!(doc["model"]["total_params"], 6_738_415_616u64);
    assert_eq!(doc["model"]["name"], "name");
    assert_eq!(stderr, "");
}

#[test]
fn failures_are_one_line_with_exit_code_2() {
    let hub = FakeHub::start();
    let config = fixture("llama-2-7b.json");
    hub.add(
        "meta-llama/Llama-2-7b-hf",
        Repo::new(1)
            .file("config.json", config.clone())
            .access(Access::Gated {
                token: "hf_right".into(),
            }),
    );
    hub.add(
        "org/slow",
        Repo::new(2)
            .file("config.json", config.clone())
            .behaviour(Behaviour::Stall),
    );
    hub.add(
        "org/cut",
        Repo::new(3)
            .file("config.json", config.clone())
            .behaviour(Behaviour::Truncate(100)),
    );
    let home = tmp("failures");
    let model = |id: &'static str| ["--model", id];
    fails(
        ftbudget(&hub.endpoint(), &home),
        &model("meta-llama/Llama-2-7b-hf"),
        &[
            "meta-llama/Llama-2-7b-hf@main",
            "401",
            "gated or private",
            "accept the licence",
            "HF_TOKEN",
        ],
    );
    let mut wrong = ftbudget(&hub.endpoint(), &home);
    wrong.env("HF_TOKEN", "hf_wrong");
    fails(
        wrong,
        &model("meta-llama/Llama-2-7b-hf"),
        &["403", "HF_TOKEN"],
    );
    // The token file huggingface_hub writes at login is used.
    std::fs::write(home.join("token"), "hf_right\n").unwrap();
    estimate(
        ftbudget(&hub.endpoint(), &home),
        "meta-llama/Llama-2-7b-hf",
        "full-ft",
    );
    fails(
        ftbudget(&hub.endpoint(), &home),
        &model("org/missing"),
        &["org/missing@main", "check the id"],
    );
    let mut slow = ftbudget(&hub.endpoint(), &home);
    slow.env("FTBUDGET_HUB_TIMEOUT_SECS", "0.5");
    fails(
        slow,
        &model("org/slow"),
        &["org/slow@main", "within 0.5 s", "FTBUDGET_HUB_TIMEOUT_SECS"],
    );
    fails(
        ftbudget(&hub.endpoint(), &home),
        &model("org/cut"),
        &["org/cut@main", "stopped after 100 of", "truncated"],
    );
    assert!(!home.join("hub/models--org--cut").exists());
    fails(
        ftbudget(&refused_endpoint(), &home),
        &model("org/nowhere"),
        &[
            "org/nowhere@main",
            "cannot reach",
            "go online, or pass a config.json path",
        ],
    );
    let mut offline = ftbudget(&hub.endpoint(), &home);
    offline.env("HF_HUB_OFFLINE", "yes");
    fails(
        offline,
        &model("org/slow"),
        &["org/slow@main", "not in the Hugging Face cache"],
    );
    // A model read from the Hub but refused afterwards: still one line.
    hub.add(
        "org/gpt2",
        Repo::new(4).file("config.json", fixture("gpt2.json")),
    );
    fails(
        ftbudget(&hub.endpoint(), &home),
        &["--model", "org/gpt2", "--seq", "4096"],
        &["--seq", "org/gpt2@main"],
    );
    // Neither a preset, a path nor an id: the old message.
    fails(
        ftbudget(&refused_endpoint(), &home),
        &model("no-such-model"),
        &["not a preset"],
    );
}

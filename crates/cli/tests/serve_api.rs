//! `ftbudget serve`'s JSON API over real HTTP on 127.0.0.1: the answers are the CLI's, byte for
//! byte, for the same settings (GET query, POST body, a pasted config.json, fit); bad input is a
//! 400 carrying the CLI's one-line message, a body over 64 KiB a 413, and the server goes on
//! serving after every refusal. Counts asserted here come from peft's own printout
//! (Llama-2-7B: 6,738,415,616 parameters; LoRA r=8 on q_proj+v_proj: 4,194,304 trainable).

mod serve_common;

use serve_common::{Server, cli, get, post, query, send_raw};

/// Llama-2-7b-hf's config.json as the Hub serves it.
const LLAMA_2_7B_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008,
  "max_position_embeddings": 4096, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "tie_word_embeddings": false, "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000
}"#;

/// `--flag value` pairs as CLI arguments.
fn flags<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
        .collect()
}

fn cli_json(command: &str, pairs: &[(&str, &str)]) -> String {
    let mut args = vec![command.to_string()];
    args.extend(flags(pairs));
    args.extend(["--format".to_string(), "json".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The same settings as a JSON object: `regime` as a list, numbers as numbers.
fn json_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    let mut regimes = Vec::new();
    for (k, v) in pairs {
        if *k == "regime" {
            regimes.push(serde_json::Value::from(*v));
        } else if let Ok(n) = v.parse::<u64>() {
            map.insert(k.to_string(), n.into());
        } else {
            map.insert(k.to_string(), (*v).into());
        }
    }
    if !regimes.is_empty() {
        map.insert("regime".into(), regimes.into());
    }
    serde_json::to_vec(&map).unwrap()
}

const CASES: &[&[(&str, &str)]] = &[
    &[],
    &[
        ("model", "llama-2-7b"),
        ("regime", "lora:r=8,targets=q_proj+v_proj"),
        ("regime", "full-ft"),
        ("batch", "4"),
        ("seq", "512"),
        ("precision", "bf16"),
        ("optimizer", "adamw-8bit"),
        ("checkpointing", "full"),
    ],
    // No seq: GPT-2's 1024-position table becomes the sequence, as in the CLI.
    &[
        ("model", "gpt2"),
        ("regime", "qlora:r=16"),
        ("regime", "dora:r=4"),
        ("gpus", "4"),
        ("zero", "3"),
        ("attention", "eager"),
        ("dropout", "0.1"),
        ("cuda-context", "eager-v100"),
    ],
    &[
        ("conventions", "seed"),
        ("model", "minigpt"),
        ("base-dtype", "fp16"),
        ("step-counters", "true"),
        ("activations", "seed"),
    ],
];

#[test]
fn get_and_post_answer_what_the_cli_prints() {
    let server = Server::start();
    for pairs in CASES {
        let expected = cli_json("estimate", pairs);
        let by_get = get(server.addr, &format!("/api/estimate{}", query(pairs)));
        assert_eq!(by_get.status, 200, "{pairs:?}: {}", by_get.body);
        assert_eq!(by_get.content_type, "application/json; charset=utf-8");
        assert_eq!(by_get.body, expected, "GET {pairs:?}");
        let by_post = post(server.addr, "/api/estimate", &json_body(pairs));
        assert_eq!(by_post.status, 200, "{pairs:?}: {}", by_post.body);
        assert_eq!(by_post.body, expected, "POST {pairs:?}");
    }
}

#[test]
fn peft_counts_come_through_the_api() {
    let server = Server::start();
    let answer = get(
        server.addr,
        "/api/estimate?model=llama-2-7b&regime=lora:r%3D8%2Ctargets%3Dq_proj%2Bv_proj",
    )
    .json();
    assert_eq!(answer["model"]["total_params"], 6_738_415_616u64);
    assert_eq!(answer["rows"][0]["trainable_params"], 4_194_304u64);
    assert_eq!(answer["rows"][0]["all_params"], 6_742_609_920u64);
}

#[test]
fn a_pasted_config_json_answers_like_the_file() {
    let server = Server::start();
    let dir = std::env::temp_dir().join(format!("ftbudget-serve-{}", std::process::id()));
    let folder = dir.join("llama-pasted");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("config.json");
    std::fs::write(&path, LLAMA_2_7B_CONFIG).unwrap();
    let pairs = [("regime", "lora:r=16"), ("batch", "2"), ("seq", "1024")];
    let mut cli_pairs = vec![("model", path.to_str().unwrap())];
    cli_pairs.extend(pairs);
    let expected = cli_json("estimate", &cli_pairs);
    let body = serde_json::json!({
        "model": "llama-pasted",
        "config": LLAMA_2_7B_CONFIG,
        "regime": ["lora:r=16"],
        "batch": 2,
        "seq": 1024,
    });
    let answer = post(
        server.addr,
        "/api/estimate",
        &serde_json::to_vec(&body).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, expected);
    assert_eq!(answer.json()["model"]["total_params"], 6_738_415_616u64);
}

#[test]
fn fit_answers_what_the_cli_prints() {
    let server = Server::start();
    let pairs = [
        ("model", "llama-3-8b"),
        ("gpu", "a100-80g"),
        ("checkpointing", "full"),
        ("regime", "full-ft"),
        ("regime", "lora:r=8"),
    ];
    let expected = cli_json("fit", &pairs);
    let answer = get(server.addr, &format!("/api/fit{}", query(&pairs)));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, expected);
    // 80 GiB A100: nvidia-smi's 81,920 MiB.
    assert_eq!(answer.json()["capacity_bytes"], 81_920u64 * 1024 * 1024);
    // The reserved estimate's settings: a 300 MiB context and a 2.5% margin (2,048 MiB).
    let mut with_overhead = pairs.to_vec();
    with_overhead.extend([("cuda-context", "300"), ("margin", "2.5%")]);
    let expected = cli_json("fit", &with_overhead);
    let answer = get(server.addr, &format!("/api/fit{}", query(&with_overhead)));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, expected);
    let v = answer.json();
    assert_eq!(v["cuda_context_bytes"], 300u64 << 20);
    assert_eq!(v["margin_bytes"], 2_048u64 << 20);
    // 81,920 - 2,048 - 300 = 79,572 MiB, a whole number of 2 MiB.
    assert_eq!(v["peak_budget_bytes"], 79_572u64 << 20);
    // With a token count the largest batch is timed and priced, as `fit --tokens` does.
    let mut timed = pairs.to_vec();
    timed.extend([
        ("tokens", "1B"),
        ("mfu", "0.5"),
        ("price-per-gpu-hour", "2"),
        ("peak", "fp16"),
    ]);
    let expected = cli_json("fit", &timed);
    let answer = get(server.addr, &format!("/api/fit{}", query(&timed)));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, expected);
    let v = answer.json();
    assert_eq!(v["timing"]["tokens"], 1_000_000_000u64);
    // The A100 datasheet's dense fp16 tensor peak.
    assert_eq!(v["timing"]["peak_flops_per_gpu"], 312_000_000_000_000u64);
    let lora = &v["answers"][1];
    assert_eq!(
        lora["time_at_max_batch"]["batch"],
        lora["max_batch"]["value"]
    );
    let refused = get(server.addr, "/api/fit?gpu=80GiB&tokens=1B");
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.error(),
        cli(&["fit", "--gpu", "80GiB", "--tokens", "1B"]).expect_err("the CLI refuses it")
    );
}

#[test]
fn regimes_and_presets_list_the_registry_and_the_shapes() {
    let server = Server::start();
    let regimes = get(server.addr, "/api/regimes").json();
    let names: Vec<&str> = regimes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ftbudget_roster::EXPECTED_REGIMES);
    let lora = &regimes[names.iter().position(|n| *n == "lora").unwrap()];
    assert_eq!(lora["rank_option"], "r");
    assert!(
        lora["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["key"] == "targets")
    );
    let presets = get(server.addr, "/api/presets").json();
    let llama = presets["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "llama-2-7b")
        .expect("llama-2-7b is a preset");
    assert_eq!(llama["total_params"], 6_738_415_616u64);
    let h100 = presets["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "h100-80g")
        .expect("h100-80g is a GPU preset");
    // nvidia-smi's 81,559 MiB.
    assert_eq!(h100["bytes"], 81_559u64 * 1024 * 1024);
}

#[test]
fn bad_input_is_a_400_with_the_clis_message() {
    let server = Server::start();
    for pairs in [
        vec![("regime", "lorra:r=8")],
        vec![("regime", "lora:targets=nope")],
        vec![("batch", "0")],
        vec![("batch", "abc")],
        vec![("seq", "16777217")],
        vec![("dropout", "1")],
        vec![("zero", "4")],
        vec![("precision", "fp8")],
        vec![("model", "gpt2"), ("seq", "4096")],
    ] {
        let expected = cli(&[&["estimate".to_string()][..], &flags(&pairs)]
            .concat()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>())
        .expect_err("the CLI refuses it");
        let answer = get(server.addr, &format!("/api/estimate{}", query(&pairs)));
        assert_eq!(answer.status, 400, "{pairs:?}: {}", answer.body);
        assert_eq!(answer.error(), expected, "{pairs:?}");
        let answer = post(server.addr, "/api/estimate", &json_body(&pairs));
        assert_eq!(answer.status, 400, "{pairs:?}: {}", answer.body);
        assert_eq!(answer.error(), expected, "POST {pairs:?}");
    }
    let fit = get(server.addr, "/api/fit?gpu=lots");
    assert_eq!(fit.status, 400);
    assert_eq!(
        fit.error(),
        cli(&["fit", "--gpu", "lots"]).expect_err("the CLI refuses it")
    );
}

#[test]
fn what_only_the_server_refuses_is_a_400_naming_it() {
    let server = Server::start();
    for (path, needle) in [
        // A Hub id would need the network: refused, and the message says so.
        (
            "/api/estimate?model=mistralai/Mistral-7B-v0.1",
            "Hub ids are not served yet",
        ),
        // The server reads no files.
        (
            "/api/estimate?model=/etc/hostname",
            "the server reads no files",
        ),
        (
            "/api/estimate?batch=1&batch=2",
            "cannot be used multiple times",
        ),
        ("/api/estimate?bogus=1", "unexpected argument 'bogus'"),
        ("/api/estimate?format=csv", "JSON only"),
        ("/api/fit?model=minigpt", "--gpu"),
    ] {
        let answer = get(server.addr, path);
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert!(
            answer.error().contains(needle),
            "{path}: {}",
            answer.error()
        );
    }
    for body in [&b"{not json"[..], b"[1, 2]", br#"{"regime": [{"r": 8}]}"#] {
        let answer = post(server.addr, "/api/estimate", body);
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert!(
            answer.error().starts_with("request body: "),
            "{}",
            answer.error()
        );
    }
    let answer = post(
        server.addr,
        "/api/estimate",
        br#"{"config": "{\"model_type\": 3}"}"#,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.error().starts_with("config: "), "{}", answer.error());
}

#[test]
fn a_body_over_64_kib_is_refused_with_413_and_the_server_goes_on() {
    let mut server = Server::start();
    let padding = " ".repeat(64 * 1024);
    let body = format!("{{\"model\": \"minigpt\"{padding}}}");
    let answer = post(server.addr, "/api/estimate", body.as_bytes());
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(answer.error().contains("65536 bytes"), "{}", answer.error());
    // A body just under the limit is read.
    let body = format!("{{\"model\": \"minigpt\"{}}}", &padding[..60 * 1024]);
    assert_eq!(
        post(server.addr, "/api/estimate", body.as_bytes()).status,
        200
    );
    assert!(server.alive());
}

#[test]
fn the_server_keeps_serving_after_bad_input() {
    let mut server = Server::start();
    let good = cli_json("estimate", &[]);
    for raw in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET /api/estimate?batch=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /api/estimate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{\"a\"",
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        std::io::Write::write_all(&mut stream, raw).unwrap();
        // The half-sent body: close without finishing it.
        drop(stream);
        let answer = get(server.addr, "/api/estimate");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, good);
    }
    let nowhere = get(server.addr, "/nowhere");
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.error().contains("/api/estimate"));
    let malformed = send_raw(
        server.addr,
        b"GET /api/estimate?batch=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(server.alive());
}

#[test]
fn the_page_is_one_self_contained_document() {
    let server = Server::start();
    let page = get(server.addr, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.body.contains("<script>") && page.body.contains("<style>"));
    // Nothing is fetched from elsewhere: no external script, style, image or font.
    for attr in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "src=\"//",
    ] {
        assert!(!page.body.contains(attr), "the page loads `{attr}...`");
    }
    // The bars use the PNG charts' colours (crates/report/src/chart.rs, Okabe-Ito).
    for colour in [
        "rgb(0,114,178)",
        "rgb(230,159,0)",
        "rgb(0,158,115)",
        "rgb(204,121,167)",
    ] {
        assert!(page.body.contains(colour), "{colour}");
    }
}

//! Workloads a model cannot take are one-line errors with exit code 2.

use assert_cmd::Command;

#[test]
fn a_sequence_longer_than_gpt2s_position_table_is_refused() {
    // GPT-2's config: n_positions 1024 (learned position embeddings).
    for cmd in [
        vec!["estimate", "--model", "gpt2", "--seq", "1025"],
        vec!["fit", "--model", "gpt2", "--gpu", "24GiB", "--seq", "1025"],
        vec![
            "sweep",
            "--model",
            "gpt2",
            "--regime",
            "lora",
            "--ranks",
            "8",
            "--seq",
            "1024,1025",
        ],
    ] {
        let out = Command::cargo_bin("ftbudget")
            .unwrap()
            .args(&cmd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err,
            "error: --seq: 1025 tokens exceed gpt2's learned position table (max_position_embeddings 1024)\n",
            "{cmd:?}"
        );
        assert!(out.stdout.is_empty(), "{cmd:?}");
    }
    let ok = Command::cargo_bin("ftbudget")
        .unwrap()
        .args(["estimate", "--model", "gpt2", "--seq", "1024"])
        .output()
        .unwrap();
    assert!(ok.status.success());
}

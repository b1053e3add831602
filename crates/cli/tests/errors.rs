//! One error policy: a bad flag is one `error: <message>` line on stderr naming that flag, exit
//! code 2, nothing on stdout, the cause printed once.

use assert_cmd::Command;

fn error_of(args: &[&str]) -> String {
    let out = Command::cargo_bin("ftbudget")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    err.trim_end().to_string()
}

#[test]
fn an_unknown_regime_names_regime_in_every_command() {
    // The registered list is the roster's (CONTRIBUTING: tests read `EXPECTED_REGIMES`).
    let unknown = format!(
        "unknown regime `lorra` (registered: {})",
        ftbudget_roster::EXPECTED_REGIMES.join(", ")
    );
    assert_eq!(
        error_of(&["fit", "--gpu", "h100-80g", "--regime", "lorra:r=8"]),
        format!("error: --regime lorra:r=8: {unknown}")
    );
    assert_eq!(
        error_of(&["estimate", "--regime", "lorra:r=8"]),
        format!("error: --regime lorra:r=8: {unknown}")
    );
    assert_eq!(
        error_of(&["sweep", "--regime", "lorra:r=8"]),
        format!("error: --regime lorra:r=8: {unknown}")
    );
}

#[test]
fn a_regime_the_model_cannot_take_names_regime_and_prints_the_cause_once() {
    let err = error_of(&["estimate", "--regime", "lora:targets=nope"]);
    assert!(
        err.starts_with(
            "error: --regime lora:targets=nope: regime `lora`: unknown target module `nope`"
        ),
        "{err}"
    );
    assert_eq!(err.matches("unknown target module").count(), 1, "{err}");
    let err = error_of(&["fit", "--gpu", "l4", "--regime", "lora:targets=nope"]);
    assert!(
        err.starts_with("error: --regime lora:targets=nope: "),
        "{err}"
    );
}

#[test]
fn memory_settings_are_checked_once_with_the_cores_limits() {
    for (args, message) in [
        (
            vec!["estimate", "--batch", "0"],
            "error: --batch: 0 is out of range (1 to 16777216)",
        ),
        (
            vec!["fit", "--gpu", "l4", "--seq", "16777217"],
            "error: --seq: 16777217 is out of range (1 to 16777216)",
        ),
        (
            vec!["estimate", "--gpus", "1048577"],
            "error: --gpus: 1048577 is out of range (1 to 1048576)",
        ),
        (
            vec!["estimate", "--dropout", "1"],
            "error: --dropout: 1 is not a probability in [0, 1)",
        ),
        (
            vec!["sweep", "--zero", "4"],
            "error: --zero: 4 is not a ZeRO stage (0, 1, 2 or 3)",
        ),
    ] {
        assert_eq!(error_of(&args), message, "{args:?}");
    }
}

/// `ftbudget cost`: each bad flag is one line naming it, exit 2.
#[test]
fn cost_flags_are_checked() {
    let cases: &[(&[&str], &str)] = &[
        (&["--tokens", "1B", "--mfu", "1.5"], "--mfu"),
        (&["--tokens", "1B", "--gpu", "24GiB"], "--gpu"),
        (
            &["--tokens", "1B", "--gpu", "a100-80g", "--peak", "fp8"],
            "--peak",
        ),
        (
            &["--tokens", "1B", "--price-per-gpu-hour=-1"],
            "--price-per-gpu-hour",
        ),
        (&[], "--tokens"),
    ];
    for (args, flag) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftbudget"))
            .arg("cost")
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// `ftbudget cost --format json`: the step FLOPs of full fine-tuning on MiniGPT (seed
/// conventions: batch 16, seq 32, eager) by hand: 229,376 weight elements per token in matmuls
/// (4 layers x 49,152 + the tied 64 x 512 lm_head), 2 x 512 tokens: 234,881,024, plus eager
/// attention 2 x 16 x 4 x 32^2 x (16 + 16) x 4 layers = 16,777,216: 251,658,240 forward; the
/// backward twice that; 1,000 tokens in steps of 512: 2 steps.
#[test]
fn cost_json_has_the_step_flops() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftbudget"))
        .args([
            "cost",
            "--conventions",
            "seed",
            "--tokens",
            "1000",
            "--regime",
            "full-ft",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &v["rows"][0];
    assert_eq!(row["flops"]["forward"], 251_658_240u64);
    assert_eq!(row["flops"]["backward"], 503_316_480u64);
    assert_eq!(row["flops"]["step"], 754_974_720u64);
    assert_eq!(row["steps"], 2);
    assert_eq!(row["total_flops"], 1_509_949_440u64);
    assert_eq!(v["mfu"], 0.4);
}

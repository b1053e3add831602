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

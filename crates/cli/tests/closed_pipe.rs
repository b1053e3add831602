//! Every subcommand ends quietly when its reader goes away (`ftbudget presets | head -1`): exit
//! status 0 and nothing on stderr, never a panic with exit code 101.
//!
//! Two readers: one that reads a single line and closes the pipe (what `head -1` does; whether
//! the command is still writing then depends on timing), and one that closed the pipe before the
//! command started, so that every write fails with `EPIPE` whatever the timing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ftbudget");

/// One invocation per subcommand; the sweep is large enough (about 5,000 rows) to outlast any
/// pipe buffer.
const INVOCATIONS: &[(&str, &[&str])] = &[
    ("regimes", &["regimes"]),
    ("presets", &["presets"]),
    ("estimate", &["estimate", "--conventions", "seed"]),
    (
        "sweep",
        &[
            "sweep",
            "--conventions",
            "seed",
            "--ranks",
            "1..1024:+1",
            "--widths",
            "64..1024",
        ],
    ),
    (
        "fit",
        &["fit", "--gpu", "h100-80g", "--model", "llama-2-7b"],
    ),
    ("cost", &["cost", "--model", "llama-2-7b", "--tokens", "1B"]),
    // `serve` writes no rows (it listens until stopped; crates/cli/tests/serve_api.rs covers
    // it): its help is what it writes to stdout.
    ("serve", &["serve", "--help"]),
];

/// The subcommands `ftbudget --help` lists, so that a new one must be added above.
fn listed_subcommands() -> Vec<String> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

fn assert_quiet(name: &str, how: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name} ({how}): {:?}, stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.is_empty(),
        "{name} ({how}) wrote to stderr: {stderr}"
    );
}

#[test]
fn every_subcommand_is_covered() {
    let mut covered: Vec<&str> = INVOCATIONS.iter().map(|(name, _)| *name).collect();
    covered.sort_unstable();
    let mut listed = listed_subcommands();
    listed.sort_unstable();
    assert_eq!(listed, covered);
}

#[test]
fn a_reader_that_stops_after_one_line() {
    for (name, args) in INVOCATIONS {
        let mut child = Command::new(BIN)
            .args(*args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "{name}: no first line");
        drop(reader);
        let out = child.wait_with_output().unwrap();
        assert_quiet(name, "closed after one line", &out);
    }
}

#[test]
fn a_pipe_closed_before_the_first_write() {
    for (name, args) in INVOCATIONS {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(*args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_quiet(name, "closed before the start", &out);
    }
}

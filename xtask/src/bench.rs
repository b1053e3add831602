//! `cargo xtask bench [--quick] [--python PATH]`: run the criterion benchmarks in `benches/`,
//! time peft's `get_nb_trainable_parameters()` on the same question in the same invocation (when
//! a Python with torch/transformers/peft is available), and write `benches/RESULTS.md`: estimates
//! per second and nanoseconds per estimate for every benchmark, and the peft ratio or why it was
//! skipped. Then the load check of `ftbudget serve` ([`serve_load`]): requests per second and
//! latency percentiles of estimate calls over HTTP on 127.0.0.1 for 10 s; `--serve-only` runs
//! just that and replaces its section of `benches/RESULTS.md`.

mod serve_load;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

struct Measured {
    id: String,
    group: String,
    mean_ns: f64,
    elements: Option<u64>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn collect(dir: &Path, since: SystemTime, out: &mut Vec<Measured>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let bench = path.join("new").join("benchmark.json");
        let estimates = path.join("new").join("estimates.json");
        if bench.is_file() && estimates.is_file() {
            let fresh = std::fs::metadata(&estimates)?.modified()? >= since;
            if fresh {
                let b: Value = serde_json::from_str(&std::fs::read_to_string(&bench)?)?;
                let e: Value = serde_json::from_str(&std::fs::read_to_string(&estimates)?)?;
                out.push(Measured {
                    id: b["full_id"].as_str().unwrap_or_default().to_string(),
                    group: b["group_id"].as_str().unwrap_or_default().to_string(),
                    mean_ns: e["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN),
                    elements: b["throughput"]["Elements"].as_u64(),
                });
            }
        } else {
            collect(&path, since, out)?;
        }
    }
    Ok(())
}

fn python_candidate(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("FTBUDGET_PYTHON").ok())
        .or_else(|| {
            Path::new("/opt/pyref/bin/python")
                .is_file()
                .then(|| "/opt/pyref/bin/python".to_string())
        })
}

/// peft's seconds per call and the counts it reported, or why there are none.
fn time_peft(root: &Path, python: Option<String>) -> Result<Value, String> {
    let python =
        python.ok_or("no Python given (--python, $FTBUDGET_PYTHON) and /opt/pyref is absent")?;
    let script = root.join("tools/peft-timing/time_peft.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("200")
        .output()
        .map_err(|e| format!("could not run {python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(format!("{python} {} failed: {last}", script.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("unreadable timing output: {e}"))
}

/// ftbudget's answer to the question peft is timed on.
fn ftbudget_counts() -> Result<(u64, u64)> {
    let model = ftbudget_models::load("llama-2-7b")?;
    let regime = ftbudget_roster::registry()?.build("lora:r=8,targets=q_proj+v_proj")?;
    let plan = regime.plan(&model)?;
    Ok((plan.trainable_params()?, plan.all_params()?))
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut serve_only = false;
    let mut python: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--serve-only" => serve_only = true,
            "--python" => python = Some(it.next().context("--python needs a path")?.clone()),
            other => bail!(
                "bench: unknown argument `{other}` (expected --quick, --serve-only, --python PATH)"
            ),
        }
    }
    let root = workspace_root();
    if serve_only {
        return update_serve_section(&root, quick);
    }
    let since = SystemTime::now();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root).args([
        "bench",
        "-p",
        "ftbudget-benches",
        "--bench",
        "estimate",
        "--",
    ]);
    if quick {
        cmd.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let peft = time_peft(&root, python_candidate(python.as_deref()));

    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let mut measured = Vec::new();
    collect(&target.join("criterion"), since, &mut measured)?;
    if measured.is_empty() {
        bail!(
            "no fresh criterion results under {}",
            target.join("criterion").display()
        );
    }
    measured.sort_by(|a, b| a.id.cmp(&b.id));

    let mut md = String::from(
        "# Benchmark results\n\nWritten by `cargo xtask bench` (do not edit by hand). Mean time per iteration from criterion;\n\
         estimates/s = points per iteration / mean time. `estimate/*`: one `plan_into` (reused plan) +\n\
         `estimate_memory` under the PyTorch conventions (amp-bf16, AdamW, batch 1, seq 2048);\n\
         `memory/*`: `estimate_memory` alone on the planned step. `flops/*`: `step_flops`;\n\
         `flops-row/*`: `FlopUnits::at`. `sweep/*`: LoRA rank x width grids; `all-cores` runs `Grid::run` on every core, `one-core`\n\
         `Grid::evaluate_range`.\n\n",
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        md,
        "Machine: {}, {threads} hardware threads; {}{}.\n",
        cpu_name(),
        rustc_version(),
        if quick {
            "; `--quick` (1 s warm-up, 2 s measurement)"
        } else {
            ""
        }
    );
    let mut group = String::new();
    for m in &measured {
        if m.group != group {
            group = m.group.clone();
            let _ = writeln!(
                md,
                "\n## {group}\n\n| benchmark | mean per iteration | estimates/s | ns per estimate |\n|---|---:|---:|---:|"
            );
        }
        let n = m.elements.unwrap_or(1) as f64;
        let per_iter = if m.mean_ns >= 1e6 {
            format!("{:.2} ms", m.mean_ns / 1e6)
        } else if m.mean_ns >= 1e3 {
            format!("{:.2} µs", m.mean_ns / 1e3)
        } else {
            format!("{:.1} ns", m.mean_ns)
        };
        let _ = writeln!(
            md,
            "| {} | {per_iter} | {:.3e} | {:.1} |",
            m.id.strip_prefix(&format!("{group}/")).unwrap_or(&m.id),
            n / (m.mean_ns * 1e-9),
            m.mean_ns / n
        );
    }
    md.push_str("\n## Side by side with peft\n\n");
    let ours = measured
        .iter()
        .find(|m| m.id == "counts/llama-2-7b/lora-r8-qv");
    let (our_trainable, our_all) = ftbudget_counts()?;
    match (peft, ours) {
        (Ok(p), Some(ours)) => {
            let peft_s = p["seconds_per_call"].as_f64().unwrap_or(f64::NAN);
            let ratio = peft_s / (ours.mean_ns * 1e-9);
            let agree = p["trainable"] == our_trainable && p["all_params"] == our_all;
            let _ = writeln!(
                md,
                "Question: trainable and all parameters of Llama-2-7B with LoRA r=8 on q_proj+v_proj.\n\n\
                 | tool | answer | time per answer |\n|---|---|---:|\n\
                 | peft {} `get_nb_trainable_parameters()` (meta device, torch {}, 1 thread; best of {} rounds of {} calls) | {} / {} | {:.1} µs |\n\
                 | ftbudget `plan_into` + `trainable_params` + `all_params` (criterion mean) | {our_trainable} / {our_all} | {:.1} ns |\n\n\
                 **ftbudget is {:.0}x faster** for the same answer{}. Both were measured in this one `cargo xtask bench` run;\n\
                 peft's model construction and wrapping ({:.2} s) is not included.",
                p["peft"].as_str().unwrap_or("?"),
                p["torch"].as_str().unwrap_or("?"),
                p["rounds"],
                p["calls_per_round"],
                p["trainable"],
                p["all_params"],
                peft_s * 1e6,
                ours.mean_ns,
                ratio,
                if agree {
                    " (answers agree)"
                } else {
                    " (WARNING: answers differ)"
                },
                p["build_seconds"].as_f64().unwrap_or(f64::NAN),
            );
        }
        (Err(why), _) => {
            let _ = writeln!(md, "Skipped: {why}.");
        }
        (Ok(_), None) => {
            let _ = writeln!(md, "Skipped: the `counts` benchmark did not run.");
        }
    }
    md.push_str(&serve_section(&root, quick)?);
    let path = root.join("benches/RESULTS.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

const SERVE_HEADING: &str = "\n## ftbudget serve under load\n";

/// The load check's section of RESULTS.md (it comes last).
fn serve_section(root: &Path, quick: bool) -> Result<String> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "--quiet", "-p", "ftbudget-cli"])
        .status()
        .context("building the release ftbudget")?;
    if !status.success() {
        bail!("cargo build --release -p ftbudget-cli failed ({status})");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let seconds = if quick { 2 } else { 10 };
    let load = serve_load::measure(
        &target.join("release/ftbudget"),
        std::time::Duration::from_secs(seconds),
    )?;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut md = String::from(SERVE_HEADING);
    let _ = writeln!(
        md,
        "\n`ftbudget serve` (release build) on 127.0.0.1; {} keep-alive connections, one client thread each, in\n\
         the same machine's {} hardware threads as the server; `GET {}` back to back for {seconds} s\n\
         (every answer checked: 200 and the first answer's length).\n\n\
         | requests | requests/s | p50 latency | p99 latency | max latency |\n|---:|---:|---:|---:|---:|\n\
         | {} | {:.0} | {:.0} µs | {:.0} µs | {:.1} ms |\n\n\
         Targets: at least 20,000 requests/s ({}), p99 under 5 ms ({}).",
        serve_load::CONNECTIONS,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        serve_load::PATH,
        load.requests,
        load.per_second(),
        load.p50_us,
        load.p99_us,
        load.max_us / 1000.0,
        verdict(load.per_second() >= 20_000.0),
        verdict(load.p99_us < 5_000.0),
    );
    println!(
        "serve: {:.0} requests/s, p99 {:.0} µs",
        load.per_second(),
        load.p99_us
    );
    Ok(md)
}

/// `--serve-only`: rerun the load check and replace its section, keeping the rest.
fn update_serve_section(root: &Path, quick: bool) -> Result<()> {
    let path = root.join("benches/RESULTS.md");
    let old =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kept = old
        .find(SERVE_HEADING)
        .map_or(old.as_str(), |at| &old[..at]);
    let md = format!("{}\n{}", kept.trim_end(), serve_section(root, quick)?);
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

//! Experiments: each folder `experiments/<NN-name>/` holds `experiment.toml` (data) and
//! `REPORT.template.md` (prose with `{{name}}` placeholders); its `kind` picks the module that
//! computes the figures and returns the output files, which are committed beside them.
//!
//! Adding a kind = one module here with
//! `pub fn generate(exp: &Experiment) -> anyhow::Result<Vec<OutputFile>>`, one `match` arm in
//! [`generate`] and one entry in [`KINDS`]. Shared TOML pieces (regimes, memory settings, chart
//! size) live in [`config`], shared formatting (percentages, model lines, chart points) in
//! [`format`].

mod compute_cost;
pub mod config;
mod format;
mod lora_counts;
mod memory_validation;
mod model_zoo;
mod peak_memory;
mod peak_published;
mod peak_reserved;
mod peft_methods;
mod production_scale;
mod scaling;

use anyhow::{Context, Result, anyhow, bail};
use ftbudget_report::template::{self, Values};
use serde::de::DeserializeOwned;
use std::fs;
use std::path::{Path, PathBuf};

/// Every experiment kind this xtask knows, for error messages.
pub const KINDS: &[&str] = &[
    "lora-counts",
    "production-scale",
    "memory-validation",
    "scaling",
    "model-zoo",
    "compute-cost",
    "peak-memory",
    "peft-methods",
];

pub const CONFIG_FILE: &str = "experiment.toml";
pub const TEMPLATE_FILE: &str = "REPORT.template.md";
pub const REPORT_FILE: &str = "REPORT.md";

/// A generated file: its name inside the experiment folder and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl OutputFile {
    pub fn text(name: &str, text: String) -> Self {
        OutputFile {
            name: name.to_string(),
            bytes: text.into_bytes(),
        }
    }

    /// A rendered chart, named by its `[chart]` keys.
    pub fn chart(keys: &config::ChartKeys, png: Vec<u8>) -> Self {
        OutputFile {
            name: keys.file.clone(),
            bytes: png,
        }
    }
}

/// One experiment folder, read: what a kind module works from.
pub struct Experiment {
    /// The workspace root, for data files an experiment names (paths relative to it).
    pub root: PathBuf,
    /// The folder relative to the workspace root (`experiments/28-lora-counts`).
    pub dir: PathBuf,
    pub config_text: String,
    pub template: String,
}

impl Experiment {
    pub fn read(root: &Path, dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(root.join(&path)).with_context(|| format!("{}", path.display()))
        };
        Ok(Experiment {
            root: root.to_path_buf(),
            dir: dir.to_path_buf(),
            config_text: read(CONFIG_FILE)?,
            template: read(TEMPLATE_FILE)?,
        })
    }

    /// `experiments/28-lora-counts/experiment.toml`, for messages.
    pub fn config_path(&self) -> String {
        self.dir.join(CONFIG_FILE).display().to_string()
    }

    /// Deserialize the whole `experiment.toml` into a kind's config type (which should be
    /// `#[serde(deny_unknown_fields)]`). Errors are one line: file, line, and the key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        toml::from_str(&self.config_text).map_err(|e| {
            let line = e
                .span()
                .map(|s| self.config_text[..s.start].matches('\n').count() + 1);
            let message = e
                .message()
                .replace('\n', " ")
                .replace("unknown field", "unknown key");
            match line {
                Some(line) => anyhow!("{}:{line}: {message}", self.config_path()),
                None => anyhow!("{}: {message}", self.config_path()),
            }
        })
    }

    /// A one-line error about `key` of this experiment's config.
    pub fn key_error(&self, key: &str, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: {key}: {message}", self.config_path())
    }

    /// `REPORT.md` from the template; every placeholder must be filled and every value used.
    pub fn render_report(&self, values: &Values) -> Result<OutputFile> {
        let text = template::render(&self.template, values)
            .map_err(|e| anyhow!("{}: {e}", self.dir.join(TEMPLATE_FILE).display()))?;
        Ok(OutputFile::text(REPORT_FILE, text))
    }
}

/// Experiment folders (`experiments/<NN-name>`), sorted, relative to `root`.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>> {
    let base = root.join("experiments");
    let mut dirs = Vec::new();
    for entry in fs::read_dir(&base).with_context(|| format!("{}", base.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let dir = Path::new("experiments").join(&name);
        if !base.join(&name).join(CONFIG_FILE).is_file() {
            bail!("{}: no {CONFIG_FILE}", dir.display());
        }
        dirs.push(dir);
    }
    dirs.sort();
    Ok(dirs)
}

/// The `kind` key alone, before the kind's own config is parsed.
fn kind_of(exp: &Experiment) -> Result<String> {
    let table: toml::Table = exp.parse()?;
    match table.get("kind") {
        Some(toml::Value::String(kind)) => Ok(kind.clone()),
        Some(_) => Err(exp.key_error("kind", "expected a string")),
        None => Err(exp.key_error("kind", "missing")),
    }
}

/// Compute one experiment's output files (REPORT.md included), writing nothing.
pub fn generate(root: &Path, dir: &Path) -> Result<Vec<OutputFile>> {
    let exp = Experiment::read(root, dir)?;
    let kind = kind_of(&exp)?;
    let outputs = match kind.as_str() {
        "lora-counts" => lora_counts::generate(&exp)?,
        "production-scale" => production_scale::generate(&exp)?,
        "memory-validation" => memory_validation::generate(&exp)?,
        "scaling" => scaling::generate(&exp)?,
        "model-zoo" => model_zoo::generate(&exp)?,
        "compute-cost" => compute_cost::generate(&exp)?,
        "peak-memory" => peak_memory::generate(&exp)?,
        "peft-methods" => peft_methods::generate(&exp)?,
        other => {
            return Err(exp.key_error(
                "kind",
                format!("unknown kind `{other}` (known: {})", KINDS.join(", ")),
            ));
        }
    };
    let mut names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("{}: output `{}` is generated twice", dir.display(), w[0]);
    }
    if let Some(bad) = names
        .iter()
        .find(|n| [CONFIG_FILE, TEMPLATE_FILE].contains(n) || n.contains(['/', '\\']))
    {
        bail!("{}: output name `{bad}` is not allowed", dir.display());
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../../experiments/28-lora-counts/experiment.toml");

    /// A scratch workspace with one experiment whose `experiment.toml` is `config`.
    fn error_for(tag: &str, config: &str) -> String {
        let root = std::env::temp_dir().join(format!("xtask-exp-{tag}-{}", std::process::id()));
        let dir = Path::new("experiments").join("99-bad");
        fs::create_dir_all(root.join(&dir)).unwrap();
        fs::write(root.join(&dir).join(CONFIG_FILE), config).unwrap();
        fs::write(root.join(&dir).join(TEMPLATE_FILE), "{{table}}").unwrap();
        let err = generate(&root, &dir).unwrap_err();
        fs::remove_dir_all(&root).unwrap();
        format!("{err:#}")
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = error_for("key", &GOOD.replace("\nbatch = 16", "\nbatchx = 16"));
        assert!(
            err.starts_with("experiments/99-bad/experiment.toml:")
                && err.contains("unknown key `batchx`"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn unknown_regime_names_the_entry() {
        let err = error_for("regime", &GOOD.replace("\"dora:r=8\"", "\"dorra:r=8\""));
        assert_eq!(
            err,
            format!(
                "experiments/99-bad/experiment.toml: regimes[5].spec: unknown regime `dorra` \
                 (registered: {})",
                ftbudget_roster::EXPECTED_REGIMES.join(", ")
            )
        );
    }

    #[test]
    fn unknown_kind_and_bad_setting_are_one_line_errors() {
        let err = error_for("kind", &GOOD.replace("\"lora-counts\"", "\"lora-count\""));
        assert_eq!(
            err,
            format!(
                "experiments/99-bad/experiment.toml: kind: unknown kind `lora-count` (known: {})",
                KINDS.join(", ")
            )
        );
        let err = error_for("zero", &GOOD.replace("\nzero = 0", "\nzero = 4"));
        assert_eq!(
            err,
            "experiments/99-bad/experiment.toml: memory.zero: 4 is not a ZeRO stage (0, 1, 2 or 3)"
        );
    }

    #[test]
    fn unknown_placeholder_names_the_template() {
        let root = std::env::temp_dir().join(format!("xtask-exp-tpl-{}", std::process::id()));
        let dir = Path::new("experiments").join("99-bad");
        fs::create_dir_all(root.join(&dir)).unwrap();
        fs::write(root.join(&dir).join(CONFIG_FILE), GOOD).unwrap();
        fs::write(root.join(&dir).join(TEMPLATE_FILE), "a\n{{tabel}}").unwrap();
        let err = format!("{:#}", generate(&root, &dir).unwrap_err());
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            err,
            "experiments/99-bad/REPORT.template.md: line 2: unknown placeholder `{{tabel}}`"
        );
    }
}

//! A request's settings, from a query string or a JSON body, read as the CLI reads its flags:
//! the names are the flag names without their dashes (`model`, `regime` repeated, `batch`,
//! `base-dtype`, ...; `_` may stand for `-`), the defaults are the flags' defaults, and a bad
//! value is refused with the message the CLI gives for it.

use crate::answers::{FitOverhead, FitTiming, one_line};
use ftbudget_core::{CudaOverhead, FitMargin, MemorySettings, ModelShape, SettingsOverrides};
use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// A parameter's name as the CLI spells its flag, and the value name clap shows for it.
const FLAGS: &[(&str, &str)] = &[
    ("model", "MODEL"),
    ("config", "CONFIG"),
    ("regime", "REGIMES"),
    ("gpu", "GPU"),
    ("conventions", "CONVENTIONS"),
    ("precision", "PRECISION"),
    ("base-dtype", "BASE_DTYPE"),
    ("optimizer", "OPTIMIZER"),
    ("step-counters", "STEP_COUNTERS"),
    ("activations", "ACTIVATIONS"),
    ("attention", "ATTENTION"),
    ("checkpointing", "CHECKPOINTING"),
    ("dropout", "DROPOUT"),
    ("batch", "BATCH"),
    ("seq", "SEQ"),
    ("gpus", "GPUS"),
    ("zero", "ZERO"),
    ("grad-accum", "GRAD_ACCUM"),
    ("loss", "LOSS"),
    ("optimizer-in-backward", "OPTIMIZER_IN_BACKWARD"),
    ("activation-offload", "ACTIVATION_OFFLOAD"),
    ("cuda-context", "CUDA_CONTEXT"),
    ("margin", "MARGIN"),
    ("tokens", "TOKENS"),
    ("dataset-tokens", "DATASET_TOKENS"),
    ("epochs", "EPOCHS"),
    ("mfu", "MFU"),
    ("price-per-gpu-hour", "PRICE_PER_GPU_HOUR"),
    ("peak", "PEAK"),
    ("format", "FORMAT"),
];

/// The parameters of one request, by flag name; every name but `regime` at most once.
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<&'static str, Vec<String>>,
}

impl Params {
    /// Collect `pairs`, refusing names that are not flags and flags given twice.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut params = Params::default();
        for (key, value) in pairs {
            let wanted = key.replace('_', "-");
            let Some(&(name, value_name)) = FLAGS.iter().find(|(n, _)| *n == wanted) else {
                let known: Vec<&str> = FLAGS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unexpected argument '{key}' (the parameters are: {})",
                    known.join(", ")
                ));
            };
            let slot = params.values.entry(name).or_default();
            if name != "regime" && !slot.is_empty() {
                return Err(format!(
                    "the argument '--{name} <{value_name}>' cannot be used multiple times"
                ));
            }
            slot.push(value);
        }
        Ok(params)
    }

    /// The pairs of a JSON object: strings, numbers and booleans as they are written, an array
    /// as that name repeated (`"regime": ["full-ft", "lora:r=8"]`).
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("request body: a JSON object is expected".into());
        };
        let mut pairs = Vec::new();
        for (key, value) in map {
            let items = match value {
                serde_json::Value::Array(items) => items,
                serde_json::Value::Null => continue,
                other => vec![other],
            };
            for item in items {
                let text = match item {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(format!(
                            "request body: `{key}` takes a string, a number, a boolean or a list of them"
                        ));
                    }
                };
                pairs.push((key.clone(), text));
            }
        }
        Self::from_pairs(pairs)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The `regime` values in order.
    pub fn regimes(&self) -> &[String] {
        self.values.get("regime").map_or(&[], Vec::as_slice)
    }

    /// `name` parsed as the CLI parses its flag.
    fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: Display,
    {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value_name = FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("VALUE", |(_, v)| v);
        text.parse::<T>()
            .map(Some)
            .map_err(|e| format!("invalid value '{text}' for '--{name} <{value_name}>': {e}"))
    }

    /// The memory settings, resolved as `MemoryArgs::settings` resolves the CLI's flags:
    /// `conventions` fills what is not given, then every setting given replaces its default.
    pub fn settings(&self) -> Result<MemorySettings, String> {
        let s = match self.get("conventions").unwrap_or("pytorch") {
            "pytorch" => MemorySettings::pytorch(),
            "seed" => MemorySettings::seed(),
            other => {
                return Err(format!(
                    "invalid value '{other}' for '--conventions <CONVENTIONS>' [possible values: seed, pytorch]"
                ));
            }
        };
        let overrides = SettingsOverrides {
            precision: self.parsed("precision")?,
            base_dtype: self.parsed("base-dtype")?,
            optimizer: self.parsed("optimizer")?,
            step_counters: self.parsed("step-counters")?,
            activations: self.parsed("activations")?,
            attention: self.parsed("attention")?,
            checkpointing: self.parsed("checkpointing")?,
            dropout: self.parsed("dropout")?,
            batch: self.parsed("batch")?,
            seq: self.parsed("seq")?,
            gpus: self.parsed("gpus")?,
            zero: self.parsed("zero")?,
            grad_accum: self.parsed("grad-accum")?,
            loss: self.parsed("loss")?,
            // The CLI's switches: `true` or `false` here.
            optimizer_in_backward: self.parsed("optimizer-in-backward")?,
            activation_offload: self.parsed("activation-offload")?,
        };
        let s = overrides.apply(s);
        s.validate().map_err(|e| one_line(&e))?;
        Ok(s)
    }

    /// `cuda-context` as `--cuda-context` reads it (default: the `default` preset).
    pub fn cuda_overhead(&self) -> Result<CudaOverhead, String> {
        Ok(self
            .parsed::<CudaOverhead>("cuda-context")?
            .unwrap_or_default())
    }

    /// `cuda-context` and `margin`, as `fit` reads them.
    pub fn fit_overhead(&self) -> Result<FitOverhead, String> {
        Ok(FitOverhead {
            cuda: self.cuda_overhead()?,
            margin: self.parsed::<FitMargin>("margin")?.unwrap_or_default(),
        })
    }

    /// `tokens` (or `dataset-tokens` x `epochs`), `mfu`, `price-per-gpu-hour` and `peak`, as
    /// `fit --tokens` reads them: `None` without a token count.
    pub fn fit_timing(
        &self,
        gpu: &str,
        settings: &MemorySettings,
    ) -> Result<Option<FitTiming>, String> {
        let tokens = self.parsed_with("tokens", ftbudget_sweep::parse_tokens)?;
        let dataset_tokens = self.parsed_with("dataset-tokens", ftbudget_sweep::parse_tokens)?;
        let epochs = self.parsed::<u64>("epochs")?.unwrap_or(1);
        let Some(tokens) = ftbudget_sweep::timing::total_tokens(tokens, dataset_tokens, epochs)
            .map_err(|e| one_line(&e))?
        else {
            return Ok(None);
        };
        let timing = ftbudget_sweep::Timing::new(&ftbudget_sweep::TimingInputs {
            gpu,
            peak: self.parsed::<ftbudget_sweep::PeakDtype>("peak")?,
            precision: settings.precision,
            mfu: self.parsed::<f64>("mfu")?,
            gpus: settings.sharding.gpus,
            price_per_gpu_hour: self.parsed::<f64>("price-per-gpu-hour")?,
        })
        .map_err(|e| one_line(&e))?;
        Ok(Some(FitTiming { timing, tokens }))
    }

    /// `name` parsed by `parse`, refused with the CLI's message.
    fn parsed_with<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value_name = FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("VALUE", |(_, v)| v);
        parse(text)
            .map(Some)
            .map_err(|e| format!("invalid value '{text}' for '--{name} <{value_name}>': {e}"))
    }

    /// `format` is accepted for links copied from the CLI, but the API answers JSON only.
    pub fn check_format(&self) -> Result<(), String> {
        match self.get("format") {
            None | Some("json") => Ok(()),
            Some(other) => Err(format!(
                "--format {other}: the API answers JSON only (format=json)"
            )),
        }
    }

    /// Whether `seq` was given (else a shorter learned position table becomes the sequence).
    pub fn seq_given(&self) -> bool {
        self.get("seq").is_some()
    }
}

/// As the CLI does: without `seq`, a learned position table shorter than the default sequence
/// becomes the sequence; a given `seq` is checked against it.
pub fn fit_seq_to_model(
    model: &ModelShape,
    settings: &mut MemorySettings,
    seq_given: bool,
) -> Result<(), String> {
    if !seq_given
        && let Some(limit) = model.position_limit()
        && settings.workload.seq > limit
    {
        settings.workload.seq = limit;
    }
    model
        .check_seq("--seq", settings.workload.seq)
        .map_err(|e| one_line(&e))
}

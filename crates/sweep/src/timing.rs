//! Time and money from a step's FLOPs, the one place `cost`, `fit`, `sweep`, the server and the
//! experiments turn FLOPs into seconds, GPU-hours and a price.
//!
//! A step of `F` FLOPs (FlopCounterMode's count, `ftbudget_core::flops`) on one GPU of dense peak
//! `P` FLOP/s reached at a model FLOPs utilization `mfu` takes `F / (P x mfu)` seconds; `K`
//! data-parallel GPUs run `K` micro-batches in that time. A run of `N` tokens is `ceil(N / (K x
//! batch x seq))` such steps (a last, partial step counted whole); GPU-hours are wall hours times
//! `K`, and cost is GPU-hours times a price. The MFU is an assumption, stated in every output and
//! overridable ([`DEFAULT_MFU`]); the peak is the GPU preset's datasheet figure
//! ([`crate::gpu::PeakFlops`]).

use crate::error::SweepError;
use crate::gpu::{GPU_PRESETS, GpuPreset};
use ftbudget_core::{Precision, StepFlops};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The MFU assumed when `--mfu` is not given: a round figure below what tuned large-scale
/// pre-training reports (PaLM 46%, Megatron-LM 40-50% on A100s), as fine-tuning runs seldom reach
/// those.
pub const DEFAULT_MFU: f64 = 0.4;

/// The GPU a sweep is timed on when none is given.
pub const DEFAULT_TIMING_GPU: &str = "h100-80g";

/// Which of the GPU's peaks the run is timed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeakDtype {
    Bf16,
    Fp16,
    Fp8,
}

impl PeakDtype {
    pub fn name(self) -> &'static str {
        match self {
            PeakDtype::Bf16 => "bf16",
            PeakDtype::Fp16 => "fp16",
            PeakDtype::Fp8 => "fp8",
        }
    }

    /// The peak a precision computes at: fp16 for the fp16 precisions, bf16 otherwise.
    pub fn of_precision(p: Precision) -> Self {
        match p {
            Precision::AmpFp16 | Precision::Fp16 | Precision::SeedMixed => PeakDtype::Fp16,
            _ => PeakDtype::Bf16,
        }
    }
}

impl fmt::Display for PeakDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PeakDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bf16" => Ok(PeakDtype::Bf16),
            "fp16" => Ok(PeakDtype::Fp16),
            "fp8" => Ok(PeakDtype::Fp8),
            _ => Err(format!(
                "`{s}` is not a peak dtype (expected bf16, fp16 or fp8)"
            )),
        }
    }
}

/// `1000`, `1_000`, `1e9`, `2.5e9`, `500K`, `500M`, `1B`, `1G`, `2T` (decimal): a whole number of
/// tokens, at least 1.
pub fn parse_tokens(text: &str) -> Result<u128, String> {
    let t = text.trim().replace('_', "");
    let (num, scale): (&str, u32) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 3),
        Some('m' | 'M') => (&t[..t.len() - 1], 6),
        Some('b' | 'B' | 'g' | 'G') => (&t[..t.len() - 1], 9),
        Some('t' | 'T') => (&t[..t.len() - 1], 12),
        _ => (&t[..], 0),
    };
    let (mantissa, exponent) = match num.split_once(['e', 'E']) {
        Some((m, e)) => (
            m,
            e.parse::<u32>()
                .map_err(|_| format!("`{text}` is not a token count"))?,
        ),
        None => (num, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a token count"));
    }
    let value: u128 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let power = (scale + exponent)
        .checked_sub(frac.len() as u32)
        .ok_or_else(|| format!("`{text}` is not a whole number of tokens"))?;
    let tokens = 10u128
        .checked_pow(power)
        .and_then(|p| value.checked_mul(p))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if tokens == 0 {
        return Err(format!("`{text}`: at least one token"));
    }
    Ok(tokens)
}

/// Tokens to train on: `--tokens N`, or `--dataset-tokens N` times `--epochs E`.
pub fn total_tokens(
    tokens: Option<u128>,
    dataset_tokens: Option<u128>,
    epochs: u64,
) -> Result<Option<u128>, SweepError> {
    let err = |flag, reason: &str| SweepError::Timing {
        flag,
        reason: reason.into(),
    };
    match (tokens, dataset_tokens) {
        (None, None) => Ok(None),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(d)) => {
            if epochs == 0 {
                return Err(err("--epochs", "at least 1"));
            }
            d.checked_mul(u128::from(epochs))
                .map(Some)
                .ok_or_else(|| err("--epochs", "dataset tokens x epochs is too large"))
        }
        (Some(_), Some(_)) => Err(err(
            "--tokens",
            "give --tokens N or --dataset-tokens N [--epochs E], not both",
        )),
    }
}

/// A preset with a datasheet peak, by name (case-insensitive).
pub fn timing_gpu(name: &str) -> Result<&'static GpuPreset, SweepError> {
    GPU_PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            let names: Vec<&str> = GPU_PRESETS.iter().map(|p| p.name).collect();
            SweepError::Gpu {
                reason: format!(
                    "`{}` is not a preset with a datasheet peak, so there is no time to give (expected one of: {})",
                    name.trim(),
                    names.join(", ")
                ),
            }
        })
}

/// How a step is timed and a run priced: the GPU's peak, the MFU, the GPUs and the price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub gpu: &'static str,
    pub peak_dtype: PeakDtype,
    /// Dense peak FLOP/s of one GPU at `peak_dtype` (the preset's datasheet figure).
    pub peak_flops_per_gpu: u64,
    /// The document the peak is read from.
    pub peak_source: &'static str,
    pub mfu: f64,
    /// `mfu` is [`DEFAULT_MFU`], an assumption (`--mfu` not given).
    pub mfu_is_default: bool,
    /// Data-parallel GPUs, each running one micro-batch per step.
    pub gpus: u64,
    pub price_per_gpu_hour: Option<f64>,
}

/// What [`Timing::new`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingInputs<'a> {
    /// A GPU preset name.
    pub gpu: &'a str,
    /// `None`: [`PeakDtype::of_precision`].
    pub peak: Option<PeakDtype>,
    pub precision: Precision,
    /// `None`: [`DEFAULT_MFU`].
    pub mfu: Option<f64>,
    pub gpus: u64,
    pub price_per_gpu_hour: Option<f64>,
}

impl Timing {
    /// Check the inputs (MFU in (0, 1], a price at least 0, a preset with the peak asked for).
    pub fn new(inputs: &TimingInputs<'_>) -> Result<Self, SweepError> {
        let preset = timing_gpu(inputs.gpu)?;
        let mfu = inputs.mfu.unwrap_or(DEFAULT_MFU);
        if !(mfu > 0.0 && mfu <= 1.0) {
            return Err(SweepError::Timing {
                flag: "--mfu",
                reason: format!("{mfu} is not in (0, 1]"),
            });
        }
        if let Some(p) = inputs.price_per_gpu_hour
            && !(p.is_finite() && p >= 0.0)
        {
            return Err(SweepError::Timing {
                flag: "--price-per-gpu-hour",
                reason: format!("{p} is not a price"),
            });
        }
        if inputs.gpus == 0 {
            return Err(SweepError::Timing {
                flag: "--gpus",
                reason: "at least 1".into(),
            });
        }
        let peak_dtype = inputs
            .peak
            .unwrap_or(PeakDtype::of_precision(inputs.precision));
        let peak_flops_per_gpu = match peak_dtype {
            PeakDtype::Bf16 => preset.peak.bf16,
            PeakDtype::Fp16 => preset.peak.fp16,
            PeakDtype::Fp8 => preset.peak.fp8.ok_or_else(|| SweepError::Timing {
                flag: "--peak",
                reason: format!("{} has no FP8 tensor cores", preset.name),
            })?,
        };
        Ok(Timing {
            gpu: preset.name,
            peak_dtype,
            peak_flops_per_gpu,
            peak_source: preset.peak.source,
            mfu,
            mfu_is_default: inputs.mfu.is_none(),
            gpus: inputs.gpus,
            price_per_gpu_hour: inputs.price_per_gpu_hour,
        })
    }

    /// Seconds one GPU takes for `flops` at `peak x mfu` (GPU-seconds).
    pub fn gpu_seconds(&self, flops: u128) -> f64 {
        flops as f64 / (self.peak_flops_per_gpu as f64 * self.mfu)
    }

    /// Seconds of one step (every GPU runs its micro-batch of `step` FLOPs at once).
    pub fn step_seconds(&self, step: &StepFlops) -> f64 {
        self.gpu_seconds(step.step)
    }

    /// A run of `tokens` tokens in micro-batches of `tokens_per_gpu_step` (`batch x seq`) per
    /// GPU; `None` when a product leaves `u128` or a micro-batch has no token.
    pub fn run(&self, step: &StepFlops, tokens_per_gpu_step: u64, tokens: u128) -> Option<RunCost> {
        let gpus = u128::from(self.gpus);
        let tokens_per_step = u128::from(tokens_per_gpu_step).checked_mul(gpus)?;
        if tokens_per_step == 0 {
            return None;
        }
        let steps = tokens.div_ceil(tokens_per_step);
        let total_flops = steps.checked_mul(gpus)?.checked_mul(step.step)?;
        let step_seconds = self.step_seconds(step);
        let gpu_seconds = self.gpu_seconds(total_flops);
        let seconds = gpu_seconds / self.gpus as f64;
        let gpu_hours = gpu_seconds / 3600.0;
        Some(RunCost {
            tokens_per_step,
            step_seconds,
            steps,
            total_flops,
            seconds,
            gpu_hours,
            cost: self.price_per_gpu_hour.map(|p| gpu_hours * p),
        })
    }
}

/// What a run costs at a step's FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunCost {
    /// Tokens one optimizer step takes over every GPU (`batch x seq x gpus`).
    pub tokens_per_step: u128,
    /// Seconds of one step: `step FLOPs / (peak x mfu)`.
    pub step_seconds: f64,
    /// Steps to see every token once: `ceil(tokens / tokens_per_step)`.
    pub steps: u128,
    /// `steps x gpus x step FLOPs`.
    pub total_flops: u128,
    /// Wall-clock seconds: `total_flops / (gpus x peak x mfu)`.
    pub seconds: f64,
    /// `seconds x gpus / 3600`.
    pub gpu_hours: f64,
    /// `gpu_hours x price`, with a price.
    pub cost: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(mfu: f64, gpus: u64) -> Timing {
        Timing {
            gpu: "test",
            peak_dtype: PeakDtype::Bf16,
            peak_flops_per_gpu: 100_000_000_000_000,
            peak_source: "",
            mfu,
            mfu_is_default: false,
            gpus,
            price_per_gpu_hour: Some(2.0),
        }
    }

    #[test]
    fn a_run_costs_its_steps_over_the_peak() {
        // 1,000 tokens in steps of 2 GPUs x 64 tokens: ceil(1000 / 128) = 8 steps, 16 GPU-steps
        // of 1e12 FLOPs; at 100 TFLOP/s x 0.5 per GPU a step takes 1e12 / 5e13 = 0.02 s and the
        // run 16e12 / 1e14 = 0.16 s, 0.32 GPU-seconds, at 2 per GPU-hour 0.32 / 3600 x 2.
        let step = StepFlops {
            step: 1_000_000_000_000,
            ..StepFlops::default()
        };
        let cost = timing(0.5, 2).run(&step, 64, 1000).unwrap();
        assert_eq!(cost.tokens_per_step, 128);
        assert_eq!(cost.steps, 8);
        assert_eq!(cost.total_flops, 16_000_000_000_000);
        assert!((cost.step_seconds - 0.02).abs() < 1e-15);
        assert!((cost.seconds - 0.16).abs() < 1e-12);
        assert!((cost.gpu_hours - 0.32 / 3600.0).abs() < 1e-15);
        assert!((cost.cost.unwrap() - 0.64 / 3600.0).abs() < 1e-15);
        assert!(timing(0.5, 2).run(&step, 0, 1000).is_none());
    }

    #[test]
    fn inputs_are_checked() {
        let inputs = TimingInputs {
            gpu: "H100-80G",
            peak: None,
            precision: Precision::AmpBf16,
            mfu: None,
            gpus: 1,
            price_per_gpu_hour: None,
        };
        let t = Timing::new(&inputs).unwrap();
        assert_eq!(t.gpu, "h100-80g");
        assert_eq!(t.mfu, DEFAULT_MFU);
        assert!(t.mfu_is_default);
        let err = |i: TimingInputs<'_>| Timing::new(&i).unwrap_err().to_string();
        assert_eq!(
            err(TimingInputs {
                mfu: Some(1.5),
                ..inputs
            }),
            "--mfu: 1.5 is not in (0, 1]"
        );
        assert_eq!(
            err(TimingInputs {
                gpu: "a100-80g",
                peak: Some(PeakDtype::Fp8),
                ..inputs
            }),
            "--peak: a100-80g has no FP8 tensor cores"
        );
        assert!(
            err(TimingInputs {
                gpu: "24GiB",
                ..inputs
            })
            .starts_with("--gpu: `24GiB`")
        );
        assert_eq!(
            err(TimingInputs {
                price_per_gpu_hour: Some(-1.0),
                ..inputs
            }),
            "--price-per-gpu-hour: -1 is not a price"
        );
    }

    #[test]
    fn token_counts_are_exact() {
        assert_eq!(parse_tokens("1000000000"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("1_000_000_000"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("2.5e9"), Ok(2_500_000_000));
        assert_eq!(parse_tokens("1B"), Ok(1_000_000_000));
        assert_eq!(parse_tokens("500M"), Ok(500_000_000));
        assert_eq!(parse_tokens("1.5T"), Ok(1_500_000_000_000));
        assert!(parse_tokens("1.5").is_err());
        assert!(parse_tokens("0").is_err());
        assert!(parse_tokens("abc").is_err());
        assert!(parse_tokens("").is_err());
        assert_eq!(total_tokens(None, Some(1000), 3).unwrap(), Some(3000));
        assert!(total_tokens(None, Some(1000), 0).is_err());
        assert_eq!(total_tokens(None, None, 1).unwrap(), None);
    }
}

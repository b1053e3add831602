//! Flags shared by every subcommand that estimates memory, resolved into [`MemorySettings`].

use anyhow::Result;
use clap::{Args, ValueEnum};
use ftbudget_core::{
    ActivationModel, AttentionImpl, Checkpointing, DType, LossKind, MemorySettings, Optimizer,
    Precision, SettingsOverrides,
};

/// Which conventions fill the flags not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Conventions {
    /// The seed lab: seed-mixed precision, Adam without step counters, the rough activation rule
    /// (batch x seq x d_model x n_layer x 16 B), batch 16, seq 32
    Seed,
    /// A PyTorch training step: amp-bf16 with the frozen base in bf16, AdamW with step counters,
    /// the per-operation activation model with sdpa attention, batch 1, seq 2048
    Pytorch,
}

#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Defaults for every flag below that is not given
    #[arg(long, value_enum, default_value = "pytorch")]
    pub conventions: Conventions,
    /// seed-mixed | amp-bf16 | amp-fp16 | fp32 | bf16 | fp16
    #[arg(long)]
    pub precision: Option<Precision>,
    /// dtype of frozen weights: fp32 | bf16 | fp16 (default: follows the precision)
    #[arg(long)]
    pub base_dtype: Option<DType>,
    /// adamw (torch's foreach step) | adamw-fused (torch fused=True, the HF Trainer's default
    /// adamw_torch_fused: no step temporaries) | adamw-8bit | sgd-momentum | sgd
    #[arg(long)]
    pub optimizer: Option<Optimizer>,
    /// Count the optimizer's per-tensor step counters (true|false)
    #[arg(long)]
    pub step_counters: Option<bool>,
    /// Activation model: seed | model | none
    #[arg(long)]
    pub activations: Option<ActivationModel>,
    /// eager | sdpa | flash
    #[arg(long)]
    pub attention: Option<AttentionImpl>,
    /// none | full | reentrant (torch.utils.checkpoint's use_reentrant=True)
    #[arg(long)]
    pub checkpointing: Option<Checkpointing>,
    /// Dropout probability (0: no masks saved)
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Micro-batch size per GPU
    #[arg(long)]
    pub batch: Option<u64>,
    /// Sequence length in tokens
    #[arg(long)]
    pub seq: Option<u64>,
    /// Data-parallel GPUs (default 1)
    #[arg(long)]
    pub gpus: Option<u64>,
    /// DeepSpeed ZeRO stage (0-3; FSDP full shard is 3; default 0)
    #[arg(long)]
    pub zero: Option<u8>,
    /// Gradient accumulation steps (default 1, or the recipe's): the later micro-batches run
    /// with the gradients alive, which raises the step's peak (not the bucket total)
    #[arg(long)]
    pub grad_accum: Option<u64>,
    /// Cross-entropy: full (transformers; the default, or the recipe's) | chunked (torchtune, 8
    /// chunks) | fused (Liger's fused linear cross-entropy: the logits never exist whole);
    /// changes the peak
    #[arg(long)]
    pub loss: Option<LossKind>,
    /// Apply each gradient inside the backward and free it (torchtune's optimizer_in_bwd);
    /// changes the peak
    #[arg(long)]
    pub optimizer_in_backward: bool,
    /// Offload saved activations to host memory (torchtune's enable_activation_offloading, with
    /// its GPU defaults; torchtune requires --checkpointing with it): the head's and the loss's
    /// saved tensors and the last offloaded ones stay on the GPU; the host bytes are reported
    /// with the peak
    #[arg(long)]
    pub activation_offload: bool,
}

/// The CUDA context counted in the reserved estimate (estimate and fit).
#[derive(Args, Debug, Clone)]
pub struct CudaArgs {
    /// CUDA context per GPU in the "Reserved (est.)" figure (what nvidia-smi would show): a
    /// whole number of MiB, or a preset: default (512 MiB, an assumption), lazy (400 MiB: CUDA
    /// 11.7+ lazy loading, pytorch/pytorch#109888), eager-v100 (1343 MiB: V100, CUDA 11.2,
    /// transformers docs), none
    #[arg(long, default_value = "default")]
    pub cuda_context: ftbudget_core::CudaOverhead,
}

/// Limits that keep every byte count exact (the core's, so the CLI and experiments agree).
pub const MAX_BATCH: u64 = MemorySettings::MAX_BATCH;
pub const MAX_SEQ: u64 = MemorySettings::MAX_SEQ;

impl MemoryArgs {
    pub fn settings(&self) -> Result<MemorySettings> {
        let base = match self.conventions {
            Conventions::Seed => MemorySettings::seed(),
            Conventions::Pytorch => MemorySettings::pytorch(),
        };
        self.on(base)
    }

    /// Every flag given, on top of `s` (the conventions' settings or a recipe's), validated.
    pub fn on(&self, s: MemorySettings) -> Result<MemorySettings> {
        let s = self.overrides().apply(s);
        s.validate()?;
        Ok(s)
    }

    /// The flags given, as the settings they replace (the server reads its parameters into the
    /// same overrides).
    fn overrides(&self) -> SettingsOverrides {
        SettingsOverrides {
            precision: self.precision,
            base_dtype: self.base_dtype,
            optimizer: self.optimizer,
            step_counters: self.step_counters,
            activations: self.activations,
            attention: self.attention,
            checkpointing: self.checkpointing,
            dropout: self.dropout,
            batch: self.batch,
            seq: self.seq,
            gpus: self.gpus,
            zero: self.zero,
            grad_accum: self.grad_accum,
            loss: self.loss,
            // Switches: given turns on; absent keeps the base's (a recipe may turn them on).
            optimizer_in_backward: self.optimizer_in_backward.then_some(true),
            activation_offload: self.activation_offload.then_some(true),
        }
    }
}

/// `--model` as a preset, a path or a Hub id (see [`crate::model_source`]), checked against the
/// workload's sequence length.
pub fn load_model(
    model: &str,
    exact_from_hub: bool,
    settings: &mut MemorySettings,
    seq_given: bool,
) -> Result<ftbudget_core::ModelShape> {
    let (shape, notes) = crate::model_source::load(model, exact_from_hub)?;
    // A plain run never fails on the default sequence: a shorter learned position table (GPT-2's
    // 1024) becomes the sequence, and the output says so. An explicit `--seq` is still checked.
    if !seq_given
        && let Some(limit) = shape.position_limit()
        && settings.workload.seq > limit
    {
        eprintln!(
            "note: --seq not given: using {limit} tokens, {}'s position table (the default {} is longer)",
            shape.name, settings.workload.seq
        );
        settings.workload.seq = limit;
    }
    shape.check_seq("--seq", settings.workload.seq)?;
    for line in notes {
        eprintln!("{line}");
    }
    Ok(shape)
}

/// The `--regime` specs given, or `defaults` when none is.
pub fn regime_specs(given: &[String], defaults: &[&str]) -> Vec<String> {
    if given.is_empty() {
        defaults.iter().map(|s| s.to_string()).collect()
    } else {
        given.to_vec()
    }
}

/// The flags that time a run and price it, read the same way by `cost`, `fit` and `sweep`
/// (the arithmetic is `ftbudget_sweep::timing`).
#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// Tokens to train on in total (1000000000, 1_000_000_000, 1e9, 1B, 500M, 2T)
    #[arg(long, value_parser = ftbudget_sweep::parse_tokens, conflicts_with = "dataset_tokens")]
    pub tokens: Option<u128>,
    /// Tokens in the dataset (with --epochs)
    #[arg(long, value_parser = ftbudget_sweep::parse_tokens)]
    pub dataset_tokens: Option<u128>,
    /// Passes over the dataset
    #[arg(long, default_value_t = 1, requires = "dataset_tokens")]
    pub epochs: u64,
    /// Model FLOPs utilization: the fraction of the GPU's peak reached on the counted FLOPs
    /// (default 0.4, an assumption stated in the output)
    #[arg(long)]
    pub mfu: Option<f64>,
    /// Price of one GPU-hour (any currency); without it no cost
    #[arg(long)]
    pub price_per_gpu_hour: Option<f64>,
    /// The peak to time at: bf16 | fp16 | fp8 (default: fp16 for fp16 precisions, else bf16)
    #[arg(long)]
    pub peak: Option<ftbudget_sweep::PeakDtype>,
}

impl TimingArgs {
    /// `--tokens`, or `--dataset-tokens` x `--epochs`; `None` when neither is given.
    pub fn tokens(&self) -> Result<Option<u128>> {
        Ok(ftbudget_sweep::timing::total_tokens(
            self.tokens,
            self.dataset_tokens,
            self.epochs,
        )?)
    }

    /// The timing on `gpu` (a preset with a datasheet peak) under `settings`' precision and GPUs.
    pub fn timing(&self, gpu: &str, settings: &MemorySettings) -> Result<ftbudget_sweep::Timing> {
        Ok(ftbudget_sweep::Timing::new(
            &ftbudget_sweep::TimingInputs {
                gpu,
                peak: self.peak,
                precision: settings.precision,
                mfu: self.mfu,
                gpus: settings.sharding.gpus,
                price_per_gpu_hour: self.price_per_gpu_hour,
            },
        )?)
    }
}

//! What `nvidia-smi` would show: the step's peak as PyTorch's CUDA caching allocator holds it,
//! plus the CUDA context. An estimate with a stated, overridable model, kept apart from the
//! memory model: it is computed from a [`PeakEstimate`] by the answer layer, never inside
//! [`super::estimate_memory`].
//!
//! **The allocator** (`c10/cuda/CUDACachingAllocator.cpp`, constants in
//! `c10/core/AllocatorConfig.h`): every request becomes a block rounded up to 512 B
//! (`round_size`); blocks of at most 1 MiB come from 2 MiB segments, blocks under 10 MiB from
//! 20 MiB segments, larger blocks from a segment of their size rounded up to 2 MiB
//! (`get_allocation_size`). Every segment the allocator obtains from `cudaMalloc` is therefore a
//! whole number of 2 MiB, and the segments together hold every live block: the reserved bytes at
//! the peak are at least the peak's live bytes rounded up to whole 2 MiB. That bound is the
//! model's allocator part ([`ReservedEstimate::allocator_rounding_bytes`]); cached free blocks
//! and fragmentation above it depend on the order of allocations and are left to `fit`'s margin
//! ([`FitMargin`]).
//!
//! **The CUDA context** (driver state and the loaded kernels) is a figure per setting
//! ([`CudaOverhead`]): measured at about 274 MB with CUDA's lazy module loading and 667 MB without
//! (pytorch/pytorch#86509), "around 400MB if CUDA >= 11.7 is used and lazy module loading"
//! (PyTorch's maintainer, pytorch/pytorch#109888), 1,343 MiB on a V100 with CUDA 11.2's eager
//! loading (transformers' "Model training anatomy"). The default, 512 MiB, is the lazy figure
//! with room for the kernels a training step loads later: an assumption, overridable.

use super::peak::PeakEstimate;
use crate::error::CountError;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

const MIB: u64 = 1 << 20;

/// PyTorch's `kMinBlockSize`: every block is a multiple of 512 B.
pub const MIN_BLOCK: u64 = 512;
/// `kSmallSize`: the largest block served from the small pool.
pub const SMALL_SIZE: u64 = MIB;
/// `kSmallBuffer`: the small pool's segment.
pub const SMALL_BUFFER: u64 = 2 * MIB;
/// `kLargeBuffer`: the segment of a block from 1 MiB up to `kMinLargeAlloc`.
pub const LARGE_BUFFER: u64 = 20 * MIB;
/// `kMinLargeAlloc`: blocks of at least this size get a segment of their own size.
pub const MIN_LARGE_ALLOC: u64 = 10 * MIB;
/// `kRoundLarge`: the granule of large segments, and of every segment.
pub const ROUND_LARGE: u64 = 2 * MIB;

/// The block a request of `bytes` takes (`round_size`, without `roundup_power2_divisions`): a
/// multiple of 512 B, at least 512 B; a request of 0 bytes allocates nothing.
pub const fn block_size(bytes: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        bytes.div_ceil(MIN_BLOCK) * MIN_BLOCK
    }
}

/// The segment `cudaMalloc`ed when no cached block can hold a block of `block` bytes
/// (`get_allocation_size`).
pub const fn segment_size(block: u64) -> u64 {
    if block <= SMALL_SIZE {
        SMALL_BUFFER
    } else if block < MIN_LARGE_ALLOC {
        LARGE_BUFFER
    } else {
        block.div_ceil(ROUND_LARGE) * ROUND_LARGE
    }
}

/// The bytes the CUDA context takes on each GPU, and where the figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CudaOverhead {
    pub context_bytes: u64,
    /// The preset's name, or `given` for a figure in MiB.
    pub source: &'static str,
}

impl CudaOverhead {
    /// The presets: name, MiB, and the statement of where the figure comes from.
    pub const PRESETS: [(&'static str, u64, &'static str); 4] = [
        (
            "default",
            512,
            "the lazy-loading figure (about 400 MB at the first CUDA call, pytorch/pytorch#109888) with room for the kernels a step loads later; an assumption",
        ),
        (
            "lazy",
            400,
            "CUDA >= 11.7 with lazy module loading, PyTorch's default: \"around 400MB\" (pytorch/pytorch#109888)",
        ),
        (
            "eager-v100",
            1343,
            "V100-SXM2 16 GB, CUDA 11.2, every kernel loaded at start: 1,343 MiB in nvidia-smi after a first tensor (transformers docs, Model training anatomy)",
        ),
        ("none", 0, "no context counted"),
    ];

    pub const DEFAULT: CudaOverhead = CudaOverhead {
        context_bytes: 512 * MIB,
        source: "default",
    };

    /// The largest context accepted, in MiB (far above any measured one).
    pub const MAX_MIB: u64 = 1 << 20;

    /// The statement behind this figure.
    pub fn statement(&self) -> &'static str {
        Self::PRESETS
            .iter()
            .find(|(name, _, _)| *name == self.source)
            .map_or("a figure given in MiB", |(_, _, why)| why)
    }
}

impl Default for CudaOverhead {
    fn default() -> Self {
        CudaOverhead::DEFAULT
    }
}

/// A `--cuda-context` or `--margin` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OverheadError {
    #[error(
        "`{value}` is neither a preset (default, lazy, eager-v100, none) nor a whole number of MiB up to {max}"
    )]
    Context { value: String, max: u64 },
    #[error(
        "`{value}` is not a fraction of GPU memory from 0 to 0.5 (e.g. 0.05 or 5%, at most 6 decimals)"
    )]
    Margin { value: String },
}

impl FromStr for CudaOverhead {
    type Err = OverheadError;
    /// A preset name, or a whole number of MiB.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if let Some(&(name, mib, _)) = Self::PRESETS.iter().find(|(n, _, _)| *n == text) {
            return Ok(CudaOverhead {
                context_bytes: mib * MIB,
                source: name,
            });
        }
        let error = || OverheadError::Context {
            value: s.to_string(),
            max: Self::MAX_MIB,
        };
        let mib: u64 = text
            .strip_suffix("MiB")
            .unwrap_or(text)
            .trim()
            .parse()
            .map_err(|_| error())?;
        if mib > Self::MAX_MIB {
            return Err(error());
        }
        Ok(CudaOverhead {
            context_bytes: mib * MIB,
            source: "given",
        })
    }
}

/// The share of GPU memory `fit` keeps free for what the reserved model leaves out (cached free
/// blocks, fragmentation, other processes), in millionths: exact integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FitMargin {
    pub parts_per_million: u64,
}

impl FitMargin {
    /// The default: 5% of the GPU's memory, an assumption (fragmentation commonly costs a few
    /// percent of reserved memory; set `--margin` to taste).
    pub const DEFAULT: FitMargin = FitMargin {
        parts_per_million: 50_000,
    };
    /// At most half the GPU.
    pub const MAX_PPM: u64 = 500_000;

    /// The margin's bytes on a GPU of `capacity` bytes (rounded down).
    pub fn bytes_of(&self, capacity: u64) -> u64 {
        let bytes = u128::from(capacity) * u128::from(self.parts_per_million) / 1_000_000;
        // At most half of `capacity`, so it fits.
        bytes as u64
    }
}

impl Default for FitMargin {
    fn default() -> Self {
        FitMargin::DEFAULT
    }
}

impl fmt::Display for FitMargin {
    /// As a percentage: `5%`, `2.5%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hundredths_of_percent = self.parts_per_million / 100;
        let (whole, frac) = (hundredths_of_percent / 100, hundredths_of_percent % 100);
        match (frac, self.parts_per_million % 100) {
            (0, 0) => write!(f, "{whole}%"),
            (_, 0) => write!(f, "{}%", format!("{whole}.{frac:02}").trim_end_matches('0')),
            _ => write!(f, "{}%", self.parts_per_million as f64 / 10_000.0),
        }
    }
}

impl FromStr for FitMargin {
    type Err = OverheadError;
    /// A fraction (`0.05`) or a percentage (`5%`), read exactly as decimal digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || OverheadError::Margin {
            value: s.to_string(),
        };
        let text = s.trim();
        let (digits, scale) = match text.strip_suffix('%') {
            Some(percent) => (percent.trim(), 10_000u64),
            None => (text, 1_000_000u64),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty())
            || !all_digits(whole)
            || !all_digits(frac)
            || whole.len() > 7
            || frac.len() > 6
        {
            return Err(error());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| error())?
        };
        // `frac` as millionths of one unit of `scale`.
        let mut frac_millionths = 0u64;
        for (i, b) in frac.bytes().enumerate() {
            frac_millionths += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        let whole_ppm = whole.checked_mul(scale).ok_or_else(error)?;
        // scale / 10^6 of a millionth: exact when the result is a whole number of ppm.
        let frac_scaled = frac_millionths * scale;
        if !frac_scaled.is_multiple_of(1_000_000) {
            return Err(error());
        }
        let ppm = whole_ppm + frac_scaled / 1_000_000;
        if ppm > Self::MAX_PPM {
            return Err(error());
        }
        Ok(FitMargin {
            parts_per_million: ppm,
        })
    }
}

/// What `nvidia-smi` would show at the step's peak (per GPU): the CUDA context plus the peak's
/// live bytes in whole allocator segments. An estimate: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservedEstimate {
    /// `context_bytes` + the peak's bytes + `allocator_rounding_bytes`.
    pub bytes: u64,
    pub context_bytes: u64,
    /// From the peak's live bytes up to whole 2 MiB segments.
    pub allocator_rounding_bytes: u64,
    /// The model in one line, with the context figure's source.
    pub model: String,
}

/// The reserved estimate of `peak` under `overhead`.
pub fn reserved(
    peak: &PeakEstimate,
    overhead: &CudaOverhead,
) -> Result<ReservedEstimate, CountError> {
    reserved_for_peak(peak.bytes, overhead)
}

/// The reserved estimate of a peak of `peak_bytes` live bytes.
pub fn reserved_for_peak(
    peak_bytes: u64,
    overhead: &CudaOverhead,
) -> Result<ReservedEstimate, CountError> {
    let overflow = CountError {
        what: "reserved bytes",
    };
    let segments = peak_bytes
        .checked_next_multiple_of(ROUND_LARGE)
        .ok_or(overflow.clone())?;
    let bytes = segments
        .checked_add(overhead.context_bytes)
        .ok_or(overflow)?;
    Ok(ReservedEstimate {
        bytes,
        context_bytes: overhead.context_bytes,
        allocator_rounding_bytes: segments - peak_bytes,
        model: model_statement(overhead),
    })
}

/// The one-line statement of the model behind a [`ReservedEstimate`].
pub fn model_statement(overhead: &CudaOverhead) -> String {
    format!(
        "estimate: CUDA context {} MiB ({}: {}) + the peak's live bytes rounded up to whole 2 MiB allocator segments (PyTorch's CUDACachingAllocator: every segment is a multiple of 2 MiB); cached free blocks and fragmentation not modelled",
        overhead.context_bytes / MIB,
        overhead.source,
        overhead.statement()
    )
}

/// The largest peak whose reserved estimate plus `margin_bytes` stays within `capacity`:
/// `peak` fits exactly when `peak <= peak_budget(..)` (rounding up to 2 MiB stays within a bound
/// exactly when the value stays within the bound rounded down).
pub fn peak_budget(capacity: u64, margin_bytes: u64, overhead: &CudaOverhead) -> u64 {
    let left = capacity
        .saturating_sub(margin_bytes)
        .saturating_sub(overhead.context_bytes);
    left - left % ROUND_LARGE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak_of(bytes: u64) -> PeakEstimate {
        PeakEstimate {
            bytes,
            ..PeakEstimate::default()
        }
    }

    /// The allocator's rules by hand: a 4-byte fp32 scalar is a 512 B block in a 2 MiB small
    /// segment; a 1,000,000-element bf16 tensor (2,000,000 B) is a block of 3,907 x 512 =
    /// 2,000,384 B, above 1 MiB and below 10 MiB, so a 20 MiB segment; a 4,096 x 4,096 bf16
    /// weight (32 MiB) is its own 32 MiB segment; 10 MiB + 1 B becomes 10 MiB + 512 B in a 12 MiB
    /// segment; exactly 1 MiB is still small.
    #[test]
    fn allocator_rounds_blocks_and_segments_as_pytorch() {
        assert_eq!(block_size(4), 512);
        assert_eq!(segment_size(block_size(4)), 2_097_152);
        assert_eq!(block_size(2_000_000), 2_000_384);
        assert_eq!(segment_size(block_size(2_000_000)), 20_971_520);
        assert_eq!(block_size(33_554_432), 33_554_432);
        assert_eq!(segment_size(33_554_432), 33_554_432);
        assert_eq!(block_size(10_485_761), 10_486_272);
        assert_eq!(segment_size(10_486_272), 12_582_912);
        assert_eq!(segment_size(1_048_576), 2_097_152);
        assert_eq!(block_size(0), 0);
    }

    /// Every segment is a whole number of 2 MiB and holds its block: what makes rounding the
    /// peak up to 2 MiB a lower bound of the segments.
    #[test]
    fn every_segment_is_whole_2_mib_and_holds_its_block() {
        for bytes in (0..40u64).map(|i| i * 777_777 + 1).chain([
            1, 511, 512, 513, 1_048_575, 1_048_576, 1_048_577, 10_485_759, 10_485_760,
        ]) {
            let block = block_size(bytes);
            let segment = segment_size(block);
            assert!(block >= bytes && block.is_multiple_of(512), "{bytes}");
            assert!(
                segment >= block && segment.is_multiple_of(2_097_152),
                "{bytes}"
            );
        }
    }

    /// By hand: a peak of 3 MiB + 1 B sits in 4 MiB of segments (1 MiB - 1 B of rounding); with
    /// the default 512 MiB context, 516 MiB = 541,065,216 B.
    #[test]
    fn reserved_is_context_plus_whole_segments() {
        let r = reserved(&peak_of(3 * 1_048_576 + 1), &CudaOverhead::DEFAULT).unwrap();
        assert_eq!(r.allocator_rounding_bytes, 1_048_575);
        assert_eq!(r.context_bytes, 536_870_912);
        assert_eq!(r.bytes, 541_065_216);
        let exact = reserved(&peak_of(4 * 1_048_576), &CudaOverhead::DEFAULT).unwrap();
        assert_eq!(exact.allocator_rounding_bytes, 0);
        assert!(
            r.model
                .starts_with("estimate: CUDA context 512 MiB (default")
        );
        assert!(reserved(&peak_of(u64::MAX - 5), &CudaOverhead::DEFAULT).is_err());
    }

    /// The budget is exact: a peak fits (reserved + margin <= capacity) exactly up to it.
    #[test]
    fn peak_budget_is_the_exact_fit_boundary() {
        let overhead: CudaOverhead = "400".parse().unwrap();
        let capacity = 24 * 1_073_741_824 + 12_345;
        let margin = FitMargin::DEFAULT.bytes_of(capacity);
        let budget = peak_budget(capacity, margin, &overhead);
        let fits =
            |peak: u64| reserved(&peak_of(peak), &overhead).unwrap().bytes + margin <= capacity;
        for peak in [budget - 1, budget, budget + 1, budget + 2_097_152, 0] {
            assert_eq!(fits(peak), peak <= budget, "{peak}");
        }
        assert_eq!(peak_budget(100, 0, &CudaOverhead::DEFAULT), 0);
    }

    /// The cited figures, and what `--cuda-context` accepts.
    #[test]
    fn context_presets_and_given_figures() {
        let mib = |s: &str| s.parse::<CudaOverhead>().unwrap().context_bytes / 1_048_576;
        assert_eq!(mib("default"), 512);
        assert_eq!(mib("lazy"), 400);
        assert_eq!(mib("eager-v100"), 1343);
        assert_eq!(mib("none"), 0);
        assert_eq!(mib("300"), 300);
        assert_eq!(mib("300MiB"), 300);
        assert_eq!("300".parse::<CudaOverhead>().unwrap().source, "given");
        for bad in ["", "-1", "1.5", "big", "2000000"] {
            let err = bad.parse::<CudaOverhead>().unwrap_err().to_string();
            assert!(err.contains("preset"), "{bad}: {err}");
        }
    }

    /// Margins read exactly as decimals: 5% of 80 GiB (85,899,345,920 B) is 4,294,967,296 B.
    #[test]
    fn margins_are_exact_fractions() {
        let ppm = |s: &str| s.parse::<FitMargin>().unwrap().parts_per_million;
        assert_eq!(ppm("0.05"), 50_000);
        assert_eq!(ppm("5%"), 50_000);
        assert_eq!(ppm("2.5%"), 25_000);
        assert_eq!(ppm("0"), 0);
        assert_eq!(ppm(".1"), 100_000);
        assert_eq!(FitMargin::DEFAULT.bytes_of(85_899_345_920), 4_294_967_296);
        assert_eq!(FitMargin::DEFAULT.to_string(), "5%");
        assert_eq!("2.5%".parse::<FitMargin>().unwrap().to_string(), "2.5%");
        for bad in ["", "0.6", "51%", "-0.1", "0.0000001", "abc", "1e-2", "."] {
            assert!(bad.parse::<FitMargin>().is_err(), "{bad}");
        }
    }
}

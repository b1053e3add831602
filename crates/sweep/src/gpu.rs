//! GPU memory sizes: named presets and exact free-form sizes (`24GiB`, `80GB`, `1.5TiB`).
//!
//! Units: `GB`/`MB`/`KB`/`TB` are decimal (10^9, ...), `GiB`/`MiB`/`KiB`/`TiB` binary (2^30, ...),
//! `B` bytes; a bare number is bytes. Fractions are exact (`1.5TiB` = 1,649,267,441,664 bytes)
//! and must come to a whole number of bytes.
//!
//! Presets are the total memory `nvidia-smi` reports for the device (`Memory-Usage` total, in
//! MiB), not the marketing figure: an H100 80GB reports 81,559 MiB (79.65 GiB), an H200 "141 GB"
//! 143,771 MiB, an L4 "24 GB" 23,034 MiB. That total is what CUDA can see; the CUDA context and
//! the allocator's own reserve still take some of it at run time, which the fit headroom is there
//! to judge. Each preset cites a public `nvidia-smi` printout of the device.

use crate::error::SweepError;

/// A named GPU, its memory and its datasheet peak throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPreset {
    pub name: &'static str,
    /// The total `nvidia-smi` reports, in MiB.
    pub nvidia_smi_mib: u64,
    /// The capacity as the vendor writes it.
    pub spec: &'static str,
    /// Dense (no 2:4 sparsity) tensor-core peaks in FLOP/s, as the vendor's datasheet or
    /// architecture whitepaper states them (FP32 accumulate where the document distinguishes);
    /// a datasheet that quotes only "with sparsity" figures is halved, as its footnote says.
    pub peak: PeakFlops,
}

/// Dense tensor-core peak FLOP/s per compute dtype, with the document they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakFlops {
    pub bf16: u64,
    pub fp16: u64,
    /// `None`: the GPU has no FP8 tensor cores (Ampere).
    pub fp8: Option<u64>,
    /// The datasheet or whitepaper the figures are read from: its title, what it states, and
    /// its URL (the last word).
    pub source: &'static str,
}

/// 10^12.
const TERA: u64 = 1_000_000_000_000;

impl GpuPreset {
    /// The capacity in bytes (`nvidia_smi_mib` x 2^20).
    pub const fn bytes(&self) -> u64 {
        self.nvidia_smi_mib << 20
    }
}

/// GeForce RTX 3090: 24,576 MiB, e.g. the `nvidia-smi` table in
/// <https://github.com/noonghunna/club-3090/issues/1128> (`22598MiB / 24576MiB`).
/// Peak: NVIDIA Ampere GA102 whitepaper, appendix table (RTX 3090): peak FP16 and BF16 tensor TFLOPS with FP32 accumulate 71 dense (142 with sparsity).
pub const RTX_3090: GpuPreset = GpuPreset {
    name: "rtx-3090",
    nvidia_smi_mib: 24_576,
    spec: "24 GB GDDR6X",
    peak: PeakFlops {
        bf16: 71 * TERA,
        fp16: 71 * TERA,
        fp8: None,
        source: "NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A, GeForce RTX 3090 (peak FP16 / BF16 tensor TFLOPS with FP32 accumulate 71 dense, 142 sparse), https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf",
    },
};

/// GeForce RTX 4090: 24,564 MiB, e.g. the `nvidia-smi` table in
/// <https://github.com/RLinf/RLinf/issues/255> (`507MiB / 24564MiB`).
/// Peak: NVIDIA Ada GPU architecture whitepaper, appendix table (RTX 4090): peak FP16 and BF16 tensor TFLOPS with FP32 accumulate 165.2, FP8 with FP32 accumulate 330.3, dense.
pub const RTX_4090: GpuPreset = GpuPreset {
    name: "rtx-4090",
    nvidia_smi_mib: 24_564,
    spec: "24 GB GDDR6X",
    peak: PeakFlops {
        bf16: 165_200_000_000_000,
        fp16: 165_200_000_000_000,
        fp8: Some(330_300_000_000_000),
        source: "NVIDIA Ada GPU Architecture whitepaper, Appendix A, GeForce RTX 4090 (peak FP16 / BF16 tensor TFLOPS with FP32 accumulate 165.2 dense, FP8 with FP32 accumulate 330.3 dense), https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
    },
};

/// L4: 23,034 MiB (<https://thundergolfer.com/blog/nvidia-gpu-memory-capacity>, the table of
/// NVML totals; the same figures in <https://github.com/modal-labs/modal-client/pull/2797>).
/// Peak: NVIDIA L4 datasheet: BF16 and FP16 tensor 242 TFLOPS, FP8 485 TFLOPS, both "with sparsity": halved.
pub const L4: GpuPreset = GpuPreset {
    name: "l4",
    nvidia_smi_mib: 23_034,
    spec: "24 GB GDDR6",
    peak: PeakFlops {
        bf16: 121 * TERA,
        fp16: 121 * TERA,
        fp8: Some(242_500_000_000_000),
        source: "NVIDIA L4 Tensor Core GPU datasheet (BF16 / FP16 tensor 242 TFLOPS, FP8 485 TFLOPS, with sparsity: halved), https://www.nvidia.com/en-us/data-center/l4/",
    },
};

/// A100 40GB: 40,960 MiB (the same two sources as [`L4`]). Some A100 40GB systems report
/// 40,536 MiB (<https://github.com/nanopool/phoenix-miner/issues/17>): give `--gpu 40536MiB`
/// for those.
/// Peak: NVIDIA A100 datasheet: BF16 and FP16 tensor 312 TFLOPS dense (624 with sparsity); no FP8.
pub const A100_40G: GpuPreset = GpuPreset {
    name: "a100-40g",
    nvidia_smi_mib: 40_960,
    spec: "40 GB HBM2",
    peak: PeakFlops {
        bf16: 312 * TERA,
        fp16: 312 * TERA,
        fp8: None,
        source: "NVIDIA A100 Tensor Core GPU datasheet (BF16 / FP16 tensor 312 TFLOPS dense, 624 with sparsity; no FP8), https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
    },
};

/// A100 80GB: 81,920 MiB (the same two sources as [`L4`]; also `34447MiB / 81920MiB` on an
/// A800-SXM4-80GB in <https://github.com/dexmal/dexbotic/issues/41>).
/// Peak: NVIDIA A100 datasheet: BF16 and FP16 tensor 312 TFLOPS dense (624 with sparsity); no FP8.
pub const A100_80G: GpuPreset = GpuPreset {
    name: "a100-80g",
    nvidia_smi_mib: 81_920,
    spec: "80 GB HBM2e",
    peak: PeakFlops {
        bf16: 312 * TERA,
        fp16: 312 * TERA,
        fp8: None,
        source: "NVIDIA A100 Tensor Core GPU datasheet (BF16 / FP16 tensor 312 TFLOPS dense, 624 with sparsity; no FP8), https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
    },
};

/// H100 80GB (HBM3): 81,559 MiB (the same two sources as [`L4`]).
/// Peak: NVIDIA H100 datasheet, SXM column (the HBM3 part): BF16 and FP16 tensor 1,979 TFLOPS, FP8 3,958 TFLOPS, "with sparsity": halved.
pub const H100_80G: GpuPreset = GpuPreset {
    name: "h100-80g",
    nvidia_smi_mib: 81_559,
    spec: "80 GB HBM3",
    peak: PeakFlops {
        bf16: 989_500_000_000_000,
        fp16: 989_500_000_000_000,
        fp8: Some(1_979 * TERA),
        source: "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM (BF16 / FP16 tensor 1,979 TFLOPS, FP8 3,958 TFLOPS, with sparsity: halved), https://www.nvidia.com/en-us/data-center/h100/",
    },
};

/// H200: 143,771 MiB (<https://thundergolfer.com/blog/nvidia-gpu-memory-capacity>).
/// Peak: NVIDIA H200 datasheet, SXM column: BF16 and FP16 tensor 1,979 TFLOPS, FP8 3,958 TFLOPS, "with sparsity": halved.
pub const H200: GpuPreset = GpuPreset {
    name: "h200",
    nvidia_smi_mib: 143_771,
    spec: "141 GB HBM3e",
    peak: PeakFlops {
        bf16: 989_500_000_000_000,
        fp16: 989_500_000_000_000,
        fp8: Some(1_979 * TERA),
        source: "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM (BF16 / FP16 tensor 1,979 TFLOPS, FP8 3,958 TFLOPS, with sparsity: halved), https://www.nvidia.com/en-us/data-center/h200/",
    },
};

/// Every preset `--gpu` accepts by name.
pub const GPU_PRESETS: &[GpuPreset] = &[RTX_3090, RTX_4090, L4, A100_40G, A100_80G, H100_80G, H200];

/// A GPU's memory: a preset's name or the size as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMemory {
    pub name: String,
    pub bytes: u64,
}

fn gpu_err(reason: String) -> SweepError {
    SweepError::Gpu { reason }
}

/// Parse an exact size: `24GiB`, `80 GB`, `1.5TiB`, `25769803776`.
pub fn parse_size(text: &str) -> Result<u64, SweepError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].replace('_', ""), t[split..].trim());
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(gpu_err(format!(
                "`{t}`: unknown unit `{unit}` (expected B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, or a preset: {})",
                preset_names()
            )));
        }
    };
    let (whole, frac) = num.split_once('.').unwrap_or((&num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 {
        return Err(gpu_err(format!(
            "`{t}` is not a size (expected e.g. 24GiB, 80GB or a preset: {})",
            preset_names()
        )));
    }
    let digits = format!("{whole}{frac}");
    let mantissa: u128 = digits
        .parse()
        .map_err(|_| gpu_err(format!("`{t}` is not a size")))?;
    let scale = 10u128.pow(frac.len() as u32);
    let scaled = mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| gpu_err(format!("`{t}` is too large")))?;
    if scaled % scale != 0 {
        return Err(gpu_err(format!("`{t}` is not a whole number of bytes")));
    }
    let bytes =
        u64::try_from(scaled / scale).map_err(|_| gpu_err(format!("`{t}` is too large")))?;
    if bytes == 0 {
        return Err(gpu_err(format!("`{t}` is no memory at all")));
    }
    Ok(bytes)
}

fn preset_names() -> String {
    GPU_PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A preset name (case-insensitive) or a size.
pub fn parse_gpu(text: &str) -> Result<GpuMemory, SweepError> {
    let t = text.trim();
    if let Some(p) = GPU_PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(t)) {
        return Ok(GpuMemory {
            name: p.name.to_string(),
            bytes: p.bytes(),
        });
    }
    Ok(GpuMemory {
        name: t.to_string(),
        bytes: parse_size(t)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact() {
        assert_eq!(parse_size("24GiB").unwrap(), 25_769_803_776);
        assert_eq!(parse_size("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_size("80 gb").unwrap(), 80_000_000_000);
        assert_eq!(parse_size("1.5TiB").unwrap(), 1_649_267_441_664);
        assert_eq!(parse_size("0.5KiB").unwrap(), 512);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("141GB").unwrap(), 141_000_000_000);
    }

    #[test]
    fn presets_are_the_totals_nvidia_smi_reports() {
        // MiB totals read off the nvidia-smi printouts cited on GPU_PRESETS, times 2^20.
        let expected = [
            ("rtx-3090", 24_576u64),
            ("rtx-4090", 24_564),
            ("l4", 23_034),
            ("a100-40g", 40_960),
            ("a100-80g", 81_920),
            ("h100-80g", 81_559),
            ("h200", 143_771),
        ];
        for (name, mib) in expected {
            assert_eq!(parse_gpu(name).unwrap().bytes, mib * 1_048_576, "{name}");
        }
        assert_eq!(GPU_PRESETS.len(), expected.len());
        // Spelled out once: an H100 80GB holds 85,520,809,984 bytes (79.65 GiB), not 80 GiB.
        assert_eq!(parse_gpu("H100-80G").unwrap().bytes, 85_520_809_984);
        assert_eq!(parse_gpu("h200").unwrap().bytes, 150_754_820_096);
    }

    #[test]
    fn peaks_are_the_datasheets_dense_figures() {
        // Dense (no 2:4 sparsity) tensor-core peaks in TFLOP/s x 10, each written here from the
        // vendor document named beside it (FP32 accumulate where the document distinguishes, as
        // PyTorch's bf16/fp16 matmuls accumulate in fp32); a datasheet that gives only "with
        // sparsity" figures (its footnote) is halved. Checked against the documents and against
        // independent transcriptions of them (Glenn Lockwood's A100 table citing the A100
        // datasheet r4; spec tables of the RTX 4090, L4 and H200 quoting the same figures).
        let expected: [(&str, u64, Option<u64>, &str); 7] = [
            // NVIDIA Ampere GA102 GPU Architecture whitepaper v2, Appendix A (RTX 3090): peak
            // FP16 and BF16 tensor TFLOPS with FP32 accumulate 71 / 142 sparse; no FP8.
            (
                "rtx-3090",
                710,
                None,
                "nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf",
            ),
            // NVIDIA Ada GPU Architecture whitepaper, Appendix A (RTX 4090): FP16 and BF16 with
            // FP32 accumulate 165.2 / 330.4 sparse; FP8 with FP32 accumulate 330.3 / 660.6.
            (
                "rtx-4090",
                1652,
                Some(3303),
                "nvidia-ada-gpu-architecture.pdf",
            ),
            // NVIDIA L4 datasheet: BF16 / FP16 242 and FP8 485 TFLOPS, all "with sparsity".
            ("l4", 1210, Some(2425), "data-center/l4/"),
            // NVIDIA A100 datasheet (r4): BF16 / FP16 312 dense, 624 with sparsity.
            (
                "a100-40g",
                3120,
                None,
                "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            ),
            (
                "a100-80g",
                3120,
                None,
                "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            ),
            // NVIDIA H100 datasheet, SXM: BF16 / FP16 1,979 and FP8 3,958 "with sparsity".
            ("h100-80g", 9895, Some(19790), "data-center/h100/"),
            // NVIDIA H200 datasheet, SXM: BF16 / FP16 1,979 and FP8 3,958 "with sparsity".
            ("h200", 9895, Some(19790), "data-center/h200/"),
        ];
        assert_eq!(GPU_PRESETS.len(), expected.len());
        for (name, bf16, fp8, document) in expected {
            let p = GPU_PRESETS.iter().find(|p| p.name == name).unwrap();
            assert_eq!(p.peak.bf16, bf16 * 100_000_000_000, "{name}");
            assert_eq!(
                p.peak.fp16, p.peak.bf16,
                "{name}: fp16 and bf16 tensor peaks are equal"
            );
            assert_eq!(p.peak.fp8, fp8.map(|f| f * 100_000_000_000), "{name}");
            // The source names the document (a title before its URL) and ends with its URL.
            let (title, url) = p.peak.source.rsplit_once(", https://").unwrap();
            assert!(title.starts_with("NVIDIA "), "{name}: {title}");
            assert!(url.ends_with(document), "{name}: {url}");
            assert!(
                !p.peak.source.contains("sparsity")
                    || p.peak.source.contains("halved")
                    || p.peak.source.contains("dense"),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_sizes_are_named_errors() {
        assert!(
            parse_size("24XB")
                .unwrap_err()
                .to_string()
                .starts_with("--gpu: `24XB`: unknown unit `XB`")
        );
        assert_eq!(
            parse_size("1.5B").unwrap_err().to_string(),
            "--gpu: `1.5B` is not a whole number of bytes"
        );
        assert_eq!(
            parse_size("0GiB").unwrap_err().to_string(),
            "--gpu: `0GiB` is no memory at all"
        );
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.2.3GB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}

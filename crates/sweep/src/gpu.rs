//! GPU memory sizes: named presets and exact free-form sizes (`24GiB`, `80GB`, `1.5TiB`).
//!
//! Units: `GB`/`MB`/`KB`/`TB` are decimal (10^9, ...), `GiB`/`MiB`/`KiB`/`TiB` binary (2^30, ...),
//! `B` bytes; a bare number is bytes. Fractions are exact (`1.5TiB` = 1,649,267,441,664 bytes)
//! and must come to a whole number of bytes.
//!
//! Presets use binary units. The "GB" on NVIDIA's data-center and GeForce spec sheets is the
//! physical capacity of binary-sized memory chips: an A100 80GB reports 81,920 MiB total in
//! `nvidia-smi`, an RTX 4090's 24 GB is twelve 16 Gbit GDDR6X chips (24 GiB). The H200's "141 GB"
//! of HBM3e is taken the same way, as 141 GiB; the L4's 24 GB as 24 GiB. CUDA contexts and ECC
//! take some of it at run time: the fit headroom is there to judge that margin.

use crate::error::SweepError;

/// A named GPU and its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPreset {
    pub name: &'static str,
    pub bytes: u64,
    /// The capacity as the vendor writes it.
    pub spec: &'static str,
}

const GIB: u64 = 1 << 30;

pub const GPU_PRESETS: &[GpuPreset] = &[
    GpuPreset {
        name: "rtx-3090",
        bytes: 24 * GIB,
        spec: "24 GB GDDR6X",
    },
    GpuPreset {
        name: "rtx-4090",
        bytes: 24 * GIB,
        spec: "24 GB GDDR6X",
    },
    GpuPreset {
        name: "l4",
        bytes: 24 * GIB,
        spec: "24 GB GDDR6",
    },
    GpuPreset {
        name: "a100-40g",
        bytes: 40 * GIB,
        spec: "40 GB HBM2",
    },
    GpuPreset {
        name: "a100-80g",
        bytes: 80 * GIB,
        spec: "80 GB HBM2e",
    },
    GpuPreset {
        name: "h100-80g",
        bytes: 80 * GIB,
        spec: "80 GB HBM3",
    },
    GpuPreset {
        name: "h200",
        bytes: 141 * GIB,
        spec: "141 GB HBM3e",
    },
];

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
            bytes: p.bytes,
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
    fn presets_carry_their_sizes() {
        assert_eq!(parse_gpu("rtx-4090").unwrap().bytes, 25_769_803_776);
        assert_eq!(parse_gpu("A100-80G").unwrap().bytes, 85_899_345_920);
        assert_eq!(parse_gpu("h200").unwrap().bytes, 151_397_597_184);
        assert_eq!(parse_gpu("a100-40g").unwrap().bytes, 42_949_672_960);
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

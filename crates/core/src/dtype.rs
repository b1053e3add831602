//! Storage element types and their sizes.

use crate::error::UnknownName;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A dense element type. Quantized storage (NF4) is described by [`crate::Storage::Nf4`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    U8,
    I64,
}

impl DType {
    /// Bytes per element.
    pub const fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
            DType::I64 => 8,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "fp32",
            DType::F16 => "fp16",
            DType::BF16 => "bf16",
            DType::U8 => "uint8",
            DType::I64 => "int64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(DType::F32),
            "fp16" | "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "uint8" | "u8" => Ok(DType::U8),
            "int64" | "i64" => Ok(DType::I64),
            other => Err(UnknownName {
                what: "dtype",
                value: other.to_string(),
                expected: "fp32, bf16, fp16".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_the_dtypes() {
        let expected = [
            (DType::F32, 4),
            (DType::F16, 2),
            (DType::BF16, 2),
            (DType::U8, 1),
            (DType::I64, 8),
        ];
        for (d, b) in expected {
            assert_eq!(d.bytes(), b, "{d:?}");
        }
    }
}

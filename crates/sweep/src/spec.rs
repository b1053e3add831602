//! Regime specs at a given rank: `lora:targets=attn` at rank 16 is `lora:targets=attn,r=16`.

use ftbudget_core::{RegimeError, RegimeSpec};

/// The largest LoRA rank a regime accepts (`ftbudget_lora::MAX_RANK`).
pub const MAX_RANK: u64 = ftbudget_lora::MAX_RANK;

/// `spec` with its `r` option set to `rank` (replaced when present, appended otherwise).
pub fn spec_with_rank(spec: &str, rank: u64) -> Result<String, RegimeError> {
    let mut parsed: RegimeSpec = spec.parse()?;
    match parsed.options.iter_mut().find(|(k, _)| k == "r") {
        Some((_, v)) => *v = rank.to_string(),
        None => parsed.options.push(("r".into(), rank.to_string())),
    }
    let options: Vec<String> = parsed
        .options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(format!("{}:{}", parsed.name, options.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_is_set_or_replaced() {
        assert_eq!(spec_with_rank("lora", 4).unwrap(), "lora:r=4");
        assert_eq!(
            spec_with_rank("qlora:targets=attn", 16).unwrap(),
            "qlora:targets=attn,r=16"
        );
        assert_eq!(
            spec_with_rank("dora:r=8,bias=all", 2).unwrap(),
            "dora:r=2,bias=all"
        );
    }
}

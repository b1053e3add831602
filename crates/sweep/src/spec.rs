//! Regime specs at a given rank: `lora:targets=attn` at rank 16 is `lora:targets=attn,r=16`. The
//! rank is whichever option the regime's registration declares
//! ([`ftbudget_core::RegimeRegistration::rank_option`]), not a fixed name.

use ftbudget_core::{RegimeError, RegimeSpec};

/// The largest LoRA rank a regime accepts (`ftbudget_lora::MAX_RANK`).
pub const MAX_RANK: u64 = ftbudget_lora::MAX_RANK;

/// `spec` with its option `rank_option` set to `rank` (replaced when present, appended
/// otherwise). `rank_option` is the regime's
/// [`ftbudget_core::RegimeRegistration::rank_option`].
pub fn spec_with_rank(spec: &str, rank_option: &str, rank: u64) -> Result<String, RegimeError> {
    let mut parsed: RegimeSpec = spec.parse()?;
    match parsed.options.iter_mut().find(|(k, _)| k == rank_option) {
        Some((_, v)) => *v = rank.to_string(),
        None => parsed
            .options
            .push((rank_option.to_string(), rank.to_string())),
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
        assert_eq!(spec_with_rank("lora", "r", 4).unwrap(), "lora:r=4");
        assert_eq!(
            spec_with_rank("qlora:targets=attn", "r", 16).unwrap(),
            "qlora:targets=attn,r=16"
        );
        assert_eq!(
            spec_with_rank("dora:r=8,bias=all", "r", 2).unwrap(),
            "dora:r=2,bias=all"
        );
        // Another regime's rank option (AdaLoRA's `init_r`), not `r`.
        assert_eq!(
            spec_with_rank("adalora:r=4,init_r=12", "init_r", 6).unwrap(),
            "adalora:r=4,init_r=6"
        );
    }
}

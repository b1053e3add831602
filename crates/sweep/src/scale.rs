//! Width scaling: one model family at many widths, for sweeps and scaling experiments.
//!
//! `scale_spec(base, width, layers)` returns the base config with `hidden_size = width` and every
//! width-dependent field following the family's ratios; vocabulary, positions, norms, biases and
//! tying are kept. At the base width (and layer count) it gives the base config back unchanged.
//!
//! - Heads: `heads = width * base_heads / base_hidden`, which must be whole; the head dimension is
//!   kept (LLaMA/Mistral/Qwen2: 128, MiniGPT 16, GPT-2 64, Gemma's explicit 256), so widths must be
//!   multiples of [`width_step`] (`base_hidden / gcd(base_hidden, base_heads)`, the head dimension
//!   when `hidden = heads x head_dim`).
//! - KV heads (grouped-query attention): the base ratio `group = heads / kv_heads` is kept:
//!   `kv_heads = heads / group`. When `heads` is not a multiple of `group` (small widths of a GQA
//!   model), `kv_heads` is the largest divisor of `heads` not above `heads / group`, and at least 1.
//! - MLP width: `intermediate = round(base_intermediate * width / base_hidden)`, then rounded up to
//!   the family's multiple (`TransformerSpec::intermediate_multiple`): 256 for LLaMA-style families (Meta's
//!   `multiple_of`; LLaMA-2-7B's 11008 and 70B's 28672 are multiples of it, and 70B scaled to 4096
//!   gives Mistral-7B's MLP width 14336), 1 for MiniGPT and GPT-2 (exactly 4x). If the base intermediate size
//!   is not itself a multiple, the multiple is 1, so the base width maps to itself.
//! - Experts (Mixtral): the expert count and top-k are kept; each expert scales like a gated MLP.

use crate::error::SweepError;
use ftbudget_core::{ModelShape, TransformerSpec};

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The smallest width step of a family: scaled widths must be multiples of it.
pub fn width_step(base: &TransformerSpec) -> u64 {
    let (h, a) = (base.hidden.max(1), base.heads.max(1));
    h / gcd(h, a)
}

/// The config of `base` at `width` (hidden size) and `layers`.
pub fn scale_spec(
    base: &TransformerSpec,
    width: u64,
    layers: u64,
) -> Result<TransformerSpec, SweepError> {
    let werr = |reason: String| SweepError::Width { reason };
    if base.hidden == 0 || base.heads == 0 {
        return Err(werr(format!("{} has no width to scale", base.name)));
    }
    if width == 0 {
        return Err(werr("0 is not a width".into()));
    }
    let step = width_step(base);
    let heads = u128::from(width) * u128::from(base.heads);
    if heads % u128::from(base.hidden) != 0 {
        return Err(werr(format!(
            "{width} does not give {} a whole number of heads (widths must be multiples of {step})",
            base.name
        )));
    }
    let heads = u64::try_from(heads / u128::from(base.hidden))
        .map_err(|_| werr(format!("{width} is too wide")))?;
    let base_kv = base.kv_heads.unwrap_or(base.heads).max(1);
    let group = (base.heads / base_kv).max(1);
    let mut kv = (heads / group).max(1);
    while heads % kv != 0 {
        kv -= 1;
    }
    let mut multiple = base.intermediate_multiple.max(1);
    if !base.intermediate.is_multiple_of(multiple) {
        multiple = 1;
    }
    let exact = u128::from(base.intermediate) * u128::from(width);
    let h = u128::from(base.hidden);
    let rounded = (2 * exact + h) / (2 * h); // round half up
    let m = u128::from(multiple);
    let intermediate = rounded.max(1).div_ceil(m) * m;
    let intermediate =
        u64::try_from(intermediate).map_err(|_| werr(format!("{width} is too wide")))?;
    let mut spec = base.clone();
    spec.hidden = width;
    spec.layers = layers;
    spec.heads = heads;
    spec.kv_heads = base.kv_heads.map(|_| kv);
    if base.kv_heads.is_none() && kv != heads {
        spec.kv_heads = Some(kv);
    }
    spec.intermediate = intermediate;
    Ok(spec)
}

/// A model shape at one point of the width x layers grid.
#[derive(Debug, Clone)]
pub struct ScaledShape {
    pub width: u64,
    pub layers: u64,
    pub shape: ModelShape,
}

impl ScaledShape {
    /// Scale `base` and build the shape, naming the width and layers on error.
    pub fn build(base: &TransformerSpec, width: u64, layers: u64) -> Result<Self, SweepError> {
        let spec = scale_spec(base, width, layers)?;
        let shape = spec.build().map_err(|cause| SweepError::Shape {
            context: format!("{} at width {width}, {layers} layers", base.name),
            cause,
        })?;
        Ok(ScaledShape {
            width,
            layers,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftbudget_core::MlpLayout;

    fn llama(hidden: u64, layers: u64, heads: u64, kv: u64, inter: u64) -> TransformerSpec {
        TransformerSpec {
            name: "llama".into(),
            family: ftbudget_core::Family::new("llama"),
            hidden,
            layers,
            heads,
            kv_heads: Some(kv),
            head_dim: None,
            intermediate: inter,
            vocab: 32000,
            max_positions: 4096,
            tied_embeddings: false,
            mlp: MlpLayout::Gated,
            block: ftbudget_core::BlockSpec::DECODER,
            names: ftbudget_core::Naming::LLAMA,
            intermediate_multiple: 256,
            ..TransformerSpec::minigpt()
        }
    }

    #[test]
    fn the_base_width_maps_to_itself() {
        let b70 = llama(8192, 80, 64, 8, 28672);
        assert_eq!(scale_spec(&b70, 8192, 80).unwrap(), b70);
        let mini = TransformerSpec::minigpt();
        assert_eq!(scale_spec(&mini, 64, 4).unwrap(), mini);
    }

    #[test]
    fn llama_70b_at_4096_has_mistral_7b_mlp_width() {
        // Mistral-7B's published intermediate size is 14336 = 28672 / 2. 70B's GQA group of 8
        // query heads per kv head is kept: 32 heads -> 4 kv heads (Mistral itself uses 8).
        let s = scale_spec(&llama(8192, 80, 64, 8, 28672), 4096, 32).unwrap();
        assert_eq!(
            (s.hidden, s.heads, s.kv_heads, s.intermediate),
            (4096, 32, Some(4), 14336)
        );
    }

    #[test]
    fn llama_2_7b_ratios() {
        // 11008/4096 * 2048 = 5504 = 21.5 * 256 -> 5632; at 8192: 22016 (= 86 * 256).
        let b7 = llama(4096, 32, 32, 32, 11008);
        let s = scale_spec(&b7, 2048, 32).unwrap();
        assert_eq!((s.heads, s.kv_heads, s.intermediate), (16, Some(16), 5632));
        assert_eq!(scale_spec(&b7, 8192, 32).unwrap().intermediate, 22016);
    }

    #[test]
    fn minigpt_scales_by_four() {
        let s = scale_spec(&TransformerSpec::minigpt(), 1024, 4).unwrap();
        assert_eq!((s.heads, s.kv_heads, s.intermediate), (64, None, 4096));
    }

    #[test]
    fn small_gqa_widths_keep_at_least_one_kv_head() {
        let b70 = llama(8192, 80, 64, 8, 28672);
        // 4 heads, group 8: one kv head; 12 heads: 12/8 = 1.
        assert_eq!(scale_spec(&b70, 512, 2).unwrap().kv_heads, Some(1));
        assert_eq!(scale_spec(&b70, 1536, 2).unwrap().kv_heads, Some(1));
        // 24 heads: 3 kv heads.
        assert_eq!(scale_spec(&b70, 3072, 2).unwrap().kv_heads, Some(3));
    }

    #[test]
    fn a_shape_error_prints_its_cause_once() {
        use std::error::Error as _;
        let err = ScaledShape::build(&TransformerSpec::minigpt(), 64, 0).unwrap_err();
        assert!(matches!(err, SweepError::Shape { .. }), "{err:?}");
        // The cause is in the message and not chained again as the source.
        assert!(err.source().is_none());
        let text = err.to_string();
        assert!(
            text.starts_with("minigpt at width 64, 0 layers: "),
            "{text}"
        );
        let cause = text.trim_start_matches("minigpt at width 64, 0 layers: ");
        assert_eq!(text.matches(cause).count(), 1, "{text}");
    }

    #[test]
    fn widths_off_the_head_grid_are_errors() {
        let err = scale_spec(&llama(4096, 32, 32, 32, 11008), 100, 32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--widths: 100 does not give llama a whole number of heads (widths must be multiples of 128)"
        );
    }
}

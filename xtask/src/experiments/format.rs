//! Formatting helpers shared by the experiment kinds: percentages, the `2r/h` reference ratio,
//! chart points in a stable order and the one-line model description of the reports' model lists.

use ftbudget_core::ModelShape;

/// `part / whole` in percent.
pub fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole as f64
}

/// `2r/h` in percent: the adapter-to-weight ratio of a square `h x h` layer.
pub fn square_ratio_percent(rank: u64, hidden: u64) -> f64 {
    100.0 * (2 * rank) as f64 / hidden as f64
}

/// A relative error as a signed percentage, two decimals: `-0.0631` -> `-6.31%`.
pub fn signed_percent(error: f64) -> String {
    format!("{:+.2}%", 100.0 * error)
}

/// Chart points sorted by x, then y, so that a chart does not depend on the input order.
pub fn sorted_points(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points
}

/// `` `name` (family): h = 4096, 32 layers, 32 heads (8 key/value heads), d_ff = 14336, vocab
/// 32000, untied lm_head `` (the caller ends the line).
pub fn model_summary(model: &ModelShape) -> String {
    let d = model.dims;
    format!(
        "`{}` ({}): h = {}, {} layers, {} heads ({} key/value heads), d_ff = {}, vocab {}, {}",
        model.name,
        model.family.name(),
        d.hidden,
        d.layers,
        d.heads,
        d.kv_heads,
        d.intermediate,
        d.vocab,
        if model.tied_embeddings {
            "tied embedding"
        } else {
            "untied lm_head"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_ratio_is_two_r_over_h() {
        // The seed: (64 + 64) x 8 / 64^2 = 25%; LLaMA-7B width: 16 / 4096 = 0.390625%.
        assert_eq!(square_ratio_percent(8, 64), 25.0);
        assert_eq!(square_ratio_percent(8, 4096), 0.390625);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(1, 8), 12.5);
        assert_eq!(signed_percent(-0.0631), "-6.31%");
        assert_eq!(signed_percent(0.0), "+0.00%");
    }

    #[test]
    fn points_sort_by_x_then_y() {
        let points = sorted_points(vec![(2.0, 1.0), (1.0, 3.0), (1.0, 2.0)]);
        assert_eq!(points, vec![(1.0, 2.0), (1.0, 3.0), (2.0, 1.0)]);
    }
}

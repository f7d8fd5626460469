//! Where the norms of a transformer block go (docs/methods.md A17, lmsdss/LayerNorm-Scaling): Pre-LN,
//! Post-LN, Mix-LN's split between them, and LayerNorm Scaling. All reuse the fused
//! residual-add + norm kernels: Pre-LN is `encode_add` writing the sum (the next residual),
//! Post-LN is `encode_add` without it.

/// Norm placement of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `h = x + Attn(N1(x))`, `y = h + FFN(N2(h))`.
    PreLn,
    /// `h = N1(x + Attn(x))`, `y = N2(h + FFN(h))`.
    PostLn,
}

/// Mix-LN (Li et al. 2024): layers `layer < P` (0-based) Post-LN, the rest Pre-LN, with
/// `P = round(post_ratio * num_layers)` (Python's round, ties to even; the paper's ratio 0.25 is
/// marked unverified in docs/methods.md).
pub fn mix_ln(layer: usize, num_layers: usize, post_ratio: f32) -> Placement {
    let p = (post_ratio as f64 * num_layers as f64).round_ties_even() as usize;
    if layer < p {
        Placement::PostLn
    } else {
        Placement::PreLn
    }
}

/// LayerNorm Scaling (Sun et al. 2025): both norm outputs of layer `layer` (0-based) of a Pre-LN
/// model scaled by `1 / sqrt(layer + 1)`.
pub fn layer_norm_scaling(layer: usize) -> f32 {
    (1.0 / ((layer + 1) as f64).sqrt()) as f32
}

/// Folds an output scale into a norm's affine: `s * (n(x) * w + b) = n(x) * (s w) + s b`. Done
/// once when the weights are loaded, so LayerNorm Scaling costs no pass at run time. Without a
/// weight, pass `[1; n]` (the scale needs somewhere to live).
pub fn fold_output_scale(
    weight: &[f32],
    bias: Option<&[f32]>,
    scale: f32,
) -> (Vec<f32>, Option<Vec<f32>>) {
    (
        weight.iter().map(|w| w * scale).collect(),
        bias.map(|b| b.iter().map(|v| v * scale).collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_ln_split() {
        // 12 layers, ratio 0.25: layers 0..3 Post-LN.
        let p: Vec<Placement> = (0..12).map(|l| mix_ln(l, 12, 0.25)).collect();
        assert_eq!(p.iter().filter(|&&x| x == Placement::PostLn).count(), 3);
        assert_eq!(p[2], Placement::PostLn);
        assert_eq!(p[3], Placement::PreLn);
        // 10 layers: 2.5 rounds to 2 (ties to even, as Python).
        assert_eq!(mix_ln(2, 10, 0.25), Placement::PreLn);
        assert_eq!(mix_ln(1, 10, 0.25), Placement::PostLn);
        assert_eq!(layer_norm_scaling(3), 0.5);
    }
}

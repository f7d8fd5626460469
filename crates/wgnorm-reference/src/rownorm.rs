//! LayerNorm and RMSNorm over rows of a row-major `[rows, n]` array.

/// Output of a row norm: `y` like `x`, and one `mean` / `rstd` per row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowNormOut {
    pub y: Vec<f64>,
    /// LayerNorm: the row mean. RMSNorm: 0.
    pub mean: Vec<f64>,
    /// `1 / sqrt(var_biased + eps)` (LayerNorm) or `1 / sqrt(mean(x^2) + eps)` (RMSNorm).
    pub rstd: Vec<f64>,
}

fn rows_of(x: &[f64], n: usize) -> std::slice::Chunks<'_, f64> {
    assert!(
        n > 0 && x.len().is_multiple_of(n),
        "x.len() must be a multiple of n > 0"
    );
    x.chunks(n)
}

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` per row, biased variance.
pub fn layer_norm(
    x: &[f64],
    n: usize,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    eps: f64,
) -> RowNormOut {
    let mut out = RowNormOut {
        y: Vec::with_capacity(x.len()),
        mean: vec![],
        rstd: vec![],
    };
    for row in rows_of(x, n) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter().enumerate() {
            let mut o = (v - mean) * rstd;
            if let Some(w) = weight {
                o *= w[i];
            }
            if let Some(b) = bias {
                o += b[i];
            }
            out.y.push(o);
        }
        out.mean.push(mean);
        out.rstd.push(rstd);
    }
    out
}

/// `y = x / sqrt(mean(x^2) + eps) * (weight_offset + weight)` per row (Gemma: offset 1).
pub fn rms_norm(
    x: &[f64],
    n: usize,
    weight: Option<&[f64]>,
    weight_offset: f64,
    eps: f64,
) -> RowNormOut {
    let mut out = RowNormOut {
        y: Vec::with_capacity(x.len()),
        mean: vec![],
        rstd: vec![],
    };
    for row in rows_of(x, n) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / n as f64;
        let rstd = 1.0 / (ms + eps).sqrt();
        for (i, v) in row.iter().enumerate() {
            let mut o = v * rstd;
            if let Some(w) = weight {
                o *= weight_offset + w[i];
            }
            out.y.push(o);
        }
        out.mean.push(0.0);
        out.rstd.push(rstd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_known_row() {
        // x = [1, 2, 3, 4]: mean 2.5, biased var 1.25.
        let o = layer_norm(&[1.0, 2.0, 3.0, 4.0], 4, None, None, 0.0);
        let s = 1.25f64.sqrt();
        let want = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
        for (a, b) in o.y.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(o.mean, vec![2.5]);
        assert!((o.rstd[0] - 1.0 / s).abs() < 1e-12);
    }

    #[test]
    fn layer_norm_affine_and_offset_invariance() {
        let x = [3.0, -1.0, 0.5];
        let shifted: Vec<f64> = x.iter().map(|v| v + 1e6).collect();
        let w = [2.0, 0.5, -1.0];
        let b = [0.1, 0.2, 0.3];
        let a = layer_norm(&x, 3, Some(&w), Some(&b), 1e-5);
        let c = layer_norm(&shifted, 3, Some(&w), Some(&b), 1e-5);
        for (p, q) in a.y.iter().zip(&c.y) {
            assert!((p - q).abs() < 1e-9, "{p} vs {q}");
        }
    }

    #[test]
    fn rms_norm_of_known_row_with_gemma_offset() {
        // x = [3, 4]: mean square 12.5.
        let o = rms_norm(&[3.0, 4.0], 2, Some(&[0.0, 1.0]), 1.0, 0.0);
        let r = 1.0 / 12.5f64.sqrt();
        assert!((o.y[0] - 3.0 * r).abs() < 1e-12);
        assert!((o.y[1] - 8.0 * r).abs() < 1e-12);
    }
}

/// RoPE angles of the reference: none, from positions and a base, or cos/sin tables
/// `[tokens, rot / 2]`.
#[derive(Clone, Copy, Debug)]
pub enum RopeRef<'a> {
    None,
    Positions { pos: &'a [f64], base: f64 },
    Table { cos: &'a [f64], sin: &'a [f64] },
}

/// Per-head RMSNorm of `x[tokens, heads, d]` (`weight + weight_offset`, shared by the heads), then
/// the first `rot` dims rotated in pairs: NeoX `(p, p + rot/2)` or GPT-J `(2p, 2p + 1)`, by the
/// token's angle for pair p (`pos * base^(-2p / rot)` or the tables).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    x: &[f64],
    heads: usize,
    d: usize,
    weight: Option<&[f64]>,
    weight_offset: f64,
    eps: f64,
    rot: usize,
    neox: bool,
    angles: RopeRef,
) -> Vec<f64> {
    let mut y = rms_norm(x, d, weight, weight_offset, eps).y;
    rope_rotate(&mut y, (heads, d), (rot, neox), angles, false);
    y
}

/// Rotates the first `rot` dims of each `[d]` row of `y[tokens, heads, d]` in pairs by its
/// token's angles (as [`qk_norm_rope`]), or by their negatives when `inverse` (the transpose:
/// the rotation is orthogonal).
pub fn rope_rotate(
    y: &mut [f64],
    (heads, d): (usize, usize),
    (rot, neox): (usize, bool),
    angles: RopeRef,
    inverse: bool,
) {
    if matches!(angles, RopeRef::None) {
        return;
    }
    let half = rot / 2;
    for (r, row) in y.chunks_mut(d).enumerate() {
        let t = r / heads;
        let normed = row.to_vec();
        for p in 0..half {
            let (i, j) = if neox {
                (p, p + half)
            } else {
                (2 * p, 2 * p + 1)
            };
            let (c, s) = match angles {
                RopeRef::Positions { pos, base } => {
                    let a = pos[t] * base.powf(-2.0 * p as f64 / rot as f64);
                    (a.cos(), a.sin())
                }
                RopeRef::Table { cos, sin } => (cos[t * half + p], sin[t * half + p]),
                RopeRef::None => (1.0, 0.0),
            };
            let s = if inverse { -s } else { s };
            row[i] = normed[i] * c - normed[j] * s;
            row[j] = normed[i] * s + normed[j] * c;
        }
    }
}

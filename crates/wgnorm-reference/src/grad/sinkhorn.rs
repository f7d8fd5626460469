//! Sinkhorn normalization's gradient (docs/methods.md B4): reverse mode through the `2L`
//! alternating L2 normalizations of `x[m, n]`, each `y = t * v / max(||v||, eps)` of a row
//! (`t = sqrt(n)`) or a column (`t = sqrt(m)`). Where a norm is clamped at eps the denominator is
//! a constant, so that vector's gradient is `t * dy / eps`.

/// The input of every pass of the forward: `2L` row-major `[m, n]` matrices, rows first.
fn pass_inputs(x: &[f64], m: usize, n: usize, iterations: usize, eps: f64) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(2 * iterations);
    let mut cur = x.to_vec();
    for _ in 0..iterations {
        for rows in [true, false] {
            out.push(cur.clone());
            for idx in lines(m, n, rows) {
                let norm = idx.iter().map(|&i| cur[i] * cur[i]).sum::<f64>().sqrt();
                let t = target(m, n, rows);
                idx.iter().for_each(|&i| cur[i] *= t / norm.max(eps));
            }
        }
    }
    out
}

/// The element indices of every row (or column) of `[m, n]`.
fn lines(m: usize, n: usize, rows: bool) -> Vec<Vec<usize>> {
    match rows {
        true => (0..m)
            .map(|i| (0..n).map(|j| i * n + j).collect())
            .collect(),
        false => (0..n)
            .map(|j| (0..m).map(|i| i * n + j).collect())
            .collect(),
    }
}

fn target(m: usize, n: usize, rows: bool) -> f64 {
    (if rows { n } else { m } as f64).sqrt()
}

/// The gradient of `sum(y * dy)` for `y = sinkhorn(x)` ([`crate::powernorm::sinkhorn`]).
pub fn sinkhorn_grad(
    x: &[f64],
    (m, n): (usize, usize),
    iterations: usize,
    eps: f64,
    dy: &[f64],
) -> Vec<f64> {
    let inputs = pass_inputs(x, m, n, iterations, eps);
    let mut g = dy.to_vec();
    for (k, v) in inputs.iter().enumerate().rev() {
        let rows = k.is_multiple_of(2);
        let t = target(m, n, rows);
        let mut next = vec![0.0; g.len()];
        for idx in lines(m, n, rows) {
            let norm = idx.iter().map(|&i| v[i] * v[i]).sum::<f64>().sqrt();
            if norm < eps {
                idx.iter().for_each(|&i| next[i] = t * g[i] / eps);
                continue;
            }
            // d(t v / |v|) = t / |v| (g - v (v . g) / |v|^2).
            let vg = idx.iter().map(|&i| v[i] * g[i]).sum::<f64>();
            for &i in &idx {
                next[i] = t / norm * (g[i] - v[i] * vg / (norm * norm));
            }
        }
        g = next;
    }
    g
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;
    use crate::powernorm::sinkhorn;

    #[test]
    fn sinkhorn_grad_matches_finite_differences() {
        for (m, n, l) in [(3, 4, 1), (5, 3, 3), (4, 6, 5)] {
            let x = values(111 + m as u64, m * n);
            let dy = values(112, m * n);
            let g = sinkhorn_grad(&x, (m, n), l, 1e-8, &dy);
            let want = numeric(&x, |v| dot(&sinkhorn(v, m, n, l, 1e-8), &dy));
            close(&format!("{m}x{n} L={l}"), &g, &want);
        }
    }

    /// A row whose norm (0.23) is below eps is clamped: its gradient is the linear map's,
    /// `t dy / eps`. (eps = 1 keeps the finite differences' cubic error far below the check's
    /// tolerance: a tiny eps amplifies the step by `t / eps`.)
    #[test]
    fn clamped_rows_take_the_constant_denominator() {
        let (m, n, eps) = (2, 3, 1.0);
        let x = [0.1, -0.2, 0.05, 1.0, -2.0, 0.5];
        let dy = values(113, m * n);
        let g = sinkhorn_grad(&x, (m, n), 1, eps, &dy);
        let want = numeric(&x, |v| dot(&sinkhorn(v, m, n, 1, eps), &dy));
        close("clamped", &g, &want);
    }
}

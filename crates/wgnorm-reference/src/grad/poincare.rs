//! The Poincaré midpoint's and Poincaré batch norm's gradients (docs/methods.md C1). The
//! midpoint: the Euclidean gradient of `sum(m * dm)` with respect to each point, through the projection onto the ball, the conformal
//! factors, the weighted sum, the Möbius half and the output projection, in the forms the
//! forward uses (norms summed coordinate-wise).

use crate::dual::Dual;
use crate::poincare::{dot, Ball, PoincareStats, MIN_NORM};

/// Through `x = project(v)`: `v` itself inside the radius `r`, else `v r / |v|`, whose
/// Jacobian is `(r / |v|) (I - v^ v^T)`.
fn through_projection(v: &[f64], g: &[f64], radius: f64) -> Vec<f64> {
    let n = dot(v, v).sqrt().max(MIN_NORM);
    if n <= radius {
        return g.to_vec();
    }
    let s = radius / n;
    let vg = dot(v, g) / (n * n);
    v.iter().zip(g).map(|(vk, gk)| s * (gk - vk * vg)).collect()
}

/// The gradient of `sum(midpoint(points) * dm)` for each point. With `x_i` the projected
/// points, `lambda_i = 2 / (1 - c |x_i|^2)`, `S = sum lambda_i x_i`, `T = sum (lambda_i - 1)`,
/// `z = S / T`, `r = sqrt(1 - c |z|^2)`, `m = z / (1 + r)` (projected):
/// `dz = dm / (1 + r) + c (z . dm) z / (r (1 + r)^2)`, `dS = dz / T`, `dT = -(dz . z) / T`, and
/// per point `dx_i = lambda_i dS + c lambda_i^2 (dS . x_i + dT) x_i`, then through the
/// projection.
pub fn poincare_midpoint_grad(ball: &Ball, points: &[Vec<f64>], dm: &[f64]) -> Vec<Vec<f64>> {
    let (c, d) = (ball.c, dm.len());
    let radius = (1.0 - ball.eps) / c.sqrt();
    let xs: Vec<Vec<f64>> = points.iter().map(|p| ball.project(p)).collect();
    let lams: Vec<f64> = xs.iter().map(|x| ball.lambda(x)).collect();
    let mut s = vec![0.0; d];
    let mut den = 0.0;
    for (x, l) in xs.iter().zip(&lams) {
        for (sk, xk) in s.iter_mut().zip(x) {
            *sk += l * xk;
        }
        den += l - 1.0;
    }
    let t = den.max(MIN_NORM);
    let z: Vec<f64> = s.iter().map(|v| v / t).collect();
    let r = (1.0 - c * dot(&z, &z)).max(0.0).sqrt();
    let phi = 1.0 / (1.0 + r);
    let half: Vec<f64> = z.iter().map(|v| v * phi).collect();
    let dh = through_projection(&half, dm, radius);
    let k = c * phi * phi / r.max(MIN_NORM) * dot(&z, &dh);
    let dz: Vec<f64> = dh.iter().zip(&z).map(|(g, zk)| phi * g + k * zk).collect();
    let ds: Vec<f64> = dz.iter().map(|g| g / t).collect();
    let dt = if den > MIN_NORM {
        -dot(&dz, &z) / t
    } else {
        0.0
    };
    points
        .iter()
        .zip(xs.iter().zip(&lams))
        .map(|(v, (x, &l))| {
            let kappa = c * l * l * (dot(&ds, x) + dt);
            let dx: Vec<f64> = ds.iter().zip(x).map(|(g, xk)| l * g + kappa * xk).collect();
            through_projection(v, &dx, radius)
        })
        .collect()
}

/// Gradients of Poincaré midpoint batch normalization with batch statistics: per point the
/// tangent vector's gradient, the bias's (`[D]`) and the variance weight's.
#[derive(Clone, Debug, PartialEq)]
pub struct PoincareBnGrads {
    pub dx: Vec<Vec<f64>>,
    pub dbias: Vec<f64>,
    pub dweight: f64,
}

/// `J^T g` of `f` at `at` (`n` inputs), by forward mode: one [`Dual`] evaluation per input.
fn vjp(at: &[f64], g: &[f64], f: impl Fn(&[Dual]) -> Vec<Dual>) -> Vec<f64> {
    (0..at.len())
        .map(|j| {
            let args: Vec<Dual> = at
                .iter()
                .enumerate()
                .map(|(i, v)| Dual::new(*v, if i == j { 1.0 } else { 0.0 }))
                .collect();
            f(&args).iter().zip(g).map(|(o, gk)| o.d * gk).sum()
        })
        .collect()
}

/// The gradients of `sum(y * dy)` for [`crate::poincare::poincare_batch_norm`] (C1 with batch
/// statistics: what the official code does in training and inference), through every map: each
/// point's own chain `log0(exp_beta(transp_{m->beta}(log_m x) * k))` (forward-mode derivatives of
/// the f64 maps), the Fréchet variance's distances, the gyromidpoint
/// ([`poincare_midpoint_grad`]), `k = sqrt(w / (var + 1e-6))`, `x = exp0(v)` and
/// `beta = exp0(b)`. O(P D^2): for tests.
pub fn poincare_batch_norm_grad(
    ball: &Ball,
    tangents: &[Vec<f64>],
    params: (&[f64], f64),
    dy: &[Vec<f64>],
) -> PoincareBnGrads {
    poincare_batch_norm_grad_with(ball, tangents, params, dy, None)
}

/// [`poincare_batch_norm_grad`], or with `running` statistics
/// ([`crate::poincare::poincare_batch_norm_with`]): then the mean and the variance are constants
/// and only each point's chain, `x = exp0(v)`, `k` and `beta` are differentiated.
pub fn poincare_batch_norm_grad_with(
    ball: &Ball,
    tangents: &[Vec<f64>],
    (bias, weight): (&[f64], f64),
    dy: &[Vec<f64>],
    running: Option<&PoincareStats>,
) -> PoincareBnGrads {
    let d = bias.len();
    let p = tangents.len();
    let xs: Vec<Vec<f64>> = tangents.iter().map(|v| ball.exp0(v)).collect();
    let (m, var) = match running {
        Some(st) => (st.mean.clone(), st.var),
        None => {
            let m = ball.midpoint(&xs);
            let var = xs.iter().map(|x| ball.distance(x, &m).powi(2)).sum::<f64>() / p as f64;
            (m, var)
        }
    };
    let k = (weight / (var + 1e-6)).sqrt();
    let beta = ball.exp0(bias);
    // Each point's chain as a function of (x, m, beta, k).
    let chain = |a: &[Dual]| -> Vec<Dual> {
        let (x, rest) = a.split_at(d);
        let (mm, rest) = rest.split_at(d);
        let (b, kk) = rest.split_at(d);
        let t = ball.transport(mm, b, &ball.logmap(mm, x));
        let u: Vec<Dual> = t.iter().map(|e| *e * kk[0]).collect();
        ball.log0(&ball.expmap(b, &u))
    };
    let (mut dm, mut dbeta, mut dk) = (vec![0.0; d], vec![0.0; d], 0.0);
    let mut dx: Vec<Vec<f64>> = Vec::with_capacity(p);
    for (x, g) in xs.iter().zip(dy) {
        let at: Vec<f64> = [x.as_slice(), &m, &beta, &[k]].concat();
        let gr = vjp(&at, g, chain);
        dx.push(gr[..d].to_vec());
        for j in 0..d {
            dm[j] += gr[d + j];
            dbeta[j] += gr[2 * d + j];
        }
        dk += gr[3 * d];
    }
    // k = sqrt(w / (var + 1e-6)); var = mean over points of d(x, m)^2.
    let dvar = -dk * k / (2.0 * (var + 1e-6));
    let dweight = dk * k / (2.0 * weight);
    if running.is_some() {
        return PoincareBnGrads {
            dx: tangents
                .iter()
                .zip(&dx)
                .map(|(v, g)| vjp(v, g, |a| ball.exp0(a)))
                .collect(),
            dbias: vjp(bias, &dbeta, |a| ball.exp0(a)),
            dweight,
        };
    }
    for (x, dxi) in xs.iter().zip(dx.iter_mut()) {
        let at: Vec<f64> = [x.as_slice(), &m].concat();
        let dist2 = |a: &[Dual]| {
            let r = ball.distance(&a[..d], &a[d..]);
            vec![r * r]
        };
        let gr = vjp(&at, &[dvar / p as f64], dist2);
        for j in 0..d {
            dxi[j] += gr[j];
            dm[j] += gr[d + j];
        }
    }
    let through_mid = poincare_midpoint_grad(ball, &xs, &dm);
    let dx = tangents
        .iter()
        .zip(dx.iter().zip(&through_mid))
        .map(|(v, (a, b))| {
            let g: Vec<f64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
            vjp(v, &g, |a| ball.exp0(a))
        })
        .collect();
    PoincareBnGrads {
        dx,
        dbias: vjp(bias, &dbeta, |a| ball.exp0(a)),
        dweight,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;
    use crate::poincare::PROJ_EPS_F64;

    /// Against central differences of the f64 midpoint: points spread over the ball, one far
    /// outside the projection radius (the projection's Jacobian), c = 0.7.
    #[test]
    fn poincare_midpoint_grad_matches_finite_differences() {
        let (p, d, c) = (5, 3, 0.7);
        let ball = Ball::new(c, PROJ_EPS_F64);
        let mut flat: Vec<f64> = values(181, p * d).iter().map(|e| 0.5 * e).collect();
        for v in &mut flat[..d] {
            *v *= 6.0; // outside the ball: projected
        }
        let dm = values(182, d);
        let pts = |f: &[f64]| -> Vec<Vec<f64>> { f.chunks(d).map(|q| q.to_vec()).collect() };
        assert!(
            dot(&flat[..d], &flat[..d]).sqrt() > 1.0 / c.sqrt(),
            "a projected point"
        );
        let g: Vec<f64> = poincare_midpoint_grad(&ball, &pts(&flat), &dm).concat();
        let want = numeric(&flat, |f| dot(&ball.midpoint(&pts(f)), &dm));
        close("dx", &g, &want);
    }

    /// The midpoint does not depend on the points' order: swapping two points swaps their
    /// gradients.
    #[test]
    fn poincare_midpoint_grad_of_a_symmetric_pair() {
        let ball = Ball::new(1.0, PROJ_EPS_F64);
        let a = vec![0.3, -0.2];
        let b = vec![-0.3, 0.2];
        let dm = vec![1.0, 0.5];
        let g = poincare_midpoint_grad(&ball, &[a.clone(), b.clone()], &dm);
        let gs = poincare_midpoint_grad(&ball, &[b, a], &dm);
        close("swapped", &g[0], &gs[1]);
        close("swapped", &g[1], &gs[0]);
    }

    /// `g` against central differences of `loss(x, bias, weight)` in each of its arguments.
    fn against_differences(
        g: &PoincareBnGrads,
        (flat, bias, weight): (&[f64], &[f64], f64),
        loss: impl Fn(&[f64], &[f64], f64) -> f64,
    ) {
        let dx = numeric(flat, |f| loss(f, bias, weight));
        close("dx", &g.dx.concat(), &dx);
        close("dbias", &g.dbias, &numeric(bias, |b| loss(flat, b, weight)));
        let dw = numeric(&[weight], |w| loss(flat, bias, w[0]));
        close("dweight", &[g.dweight], &dw);
    }

    /// Poincaré batch norm's gradients against central differences of its f64 forward: every
    /// point's tangent vector, the bias and the weight (c = 0.5, one point far out so its exp0 is
    /// at the projection).
    #[test]
    fn poincare_batch_norm_grad_matches_finite_differences() {
        use crate::poincare::{poincare_batch_norm, points_along};
        let (p, d, c) = (6, 3, 0.5);
        let ball = Ball::new(c, PROJ_EPS_F64);
        let mut flat: Vec<f64> = values(201, p * d).iter().map(|e| 1.2 * e).collect();
        for v in &mut flat[..d] {
            *v *= 10.0; // exp0 reaches the projection radius
        }
        let bias: Vec<f64> = values(202, d).iter().map(|e| 0.4 * e).collect();
        let dy = values(203, p * d);
        let weight = 0.8;
        let pts = |f: &[f64]| points_along(f, &[p, d], 1).0;
        let dyp = pts(&dy);
        let g = poincare_batch_norm_grad(&ball, &pts(&flat), (&bias, weight), &dyp);
        let loss = |f: &[f64], b: &[f64], w: f64| {
            dot(&poincare_batch_norm(&ball, f, &[p, d], 1, b, w), &dy)
        };
        against_differences(&g, (&flat, &bias, weight), loss);
    }

    /// With running statistics (constants): against central differences of
    /// `poincare_batch_norm_with` at a fixed mean and variance.
    #[test]
    fn poincare_batch_norm_grad_with_running_statistics_matches_finite_differences() {
        use crate::poincare::{poincare_batch_norm_with, points_along};
        let (p, d, c) = (4, 3, 0.8);
        let ball = Ball::new(c, PROJ_EPS_F64);
        let flat: Vec<f64> = values(211, p * d).iter().map(|e| 0.9 * e).collect();
        let bias: Vec<f64> = values(212, d).iter().map(|e| 0.3 * e).collect();
        let dy = values(213, p * d);
        let stats = PoincareStats {
            mean: values(214, d).iter().map(|e| 0.2 * e).collect(),
            var: 0.37,
        };
        let weight = 1.3;
        let pts = |f: &[f64]| points_along(f, &[p, d], 1).0;
        let g = poincare_batch_norm_grad_with(
            &ball,
            &pts(&flat),
            (&bias, weight),
            &pts(&dy),
            Some(&stats),
        );
        let loss = |f: &[f64], b: &[f64], w: f64| {
            let y = poincare_batch_norm_with(&ball, &pts(f), &stats, b, w).concat();
            dot(&y, &dy)
        };
        against_differences(&g, (&flat, &bias, weight), loss);
    }
}

//! The Poincaré midpoint's gradient (docs/methods.md C1): the Euclidean gradient of
//! `sum(m * dm)` with respect to each point, through the projection onto the ball, the conformal
//! factors, the weighted sum, the Möbius half and the output projection, in the forms the
//! forward uses (norms summed coordinate-wise).

use crate::poincare::Ball;

const MIN_NORM: f64 = 1e-15;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

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
}

// The gyromidpoint's backward (docs/methods.md C1), after the forward's WEIGHTS, COLSUM and MEAN
// stages (`midpoint.wgsl`) in the same scratch, whose sums it reads: S = sum lambda_i x_i (the
// first coordinate tile after MEAN's pairwise sums) and the tile sums of lambda_i - 1 (T).
// With z = S / T, r = sqrt(1 - c|z|^2), h = z / (1 + r) and m = project(h):
//   GSTAGE 0 (one workgroup): dh = dm through the projection of h,
//            dz = dh / (1 + r) + c (z . dh) z / (r (1 + r)^2), dS = dz / T, dT = -(dz . z) / T
//            (0 where T was clamped) into `grad` ([dS (d) | dT]).
//   GSTAGE 1 (one invocation per point): with x = project(v), lambda = 2 / (1 - c|x|^2),
//            dx = lambda dS + c lambda^2 (dS . x + dT) x, then through the projection of v:
//            s (dx - v (v . dx) / |v|^2) where v was projected by s = radius / |v|.
// Every norm and dot product is summed coordinate-wise; fixed order (bitwise reproducible).

override WG: u32 = 256u;
override GSTAGE: u32 = 0u;

@group(0) @binding(0) var<uniform> params: BallParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<Elem>;

fn mean_grad(lid: u32) {
    let d = params.d;
    let c = params.c;
    var den_part = 0.0;
    for (var t = lid; t < params.tiles; t += WG) {
        den_part += scratch[off_den() + t];
    }
    let den_raw = wg_sum(lid, den_part);
    let den = max(den_raw, MIN_NORM);
    var zz_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let z = scratch[off_zsum() + k] / den;
        zz_part += z * z;
    }
    let zz = wg_sum(lid, zz_part);
    let r = sqrt(max(1.0 - c * zz, 0.0));
    let phi = 1.0 / (1.0 + r);
    // Through m = project(h), h = phi z: |h|^2 = phi^2 |z|^2.
    let hh = phi * phi * zz;
    let hn = max(sqrt(hh), MIN_NORM);
    let pm = proj_scale(hn, params.max_norm);
    var hd_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        hd_part += phi * scratch[off_zsum() + k] / den * dy_load(k);
    }
    let hd = wg_sum(lid, hd_part) / (hn * hn);
    // dh = pm (dm - h (h . dm) / |h|^2) when projected (pm < 1), dm otherwise; kept in grad.
    var zdh_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let z = scratch[off_zsum() + k] / den;
        var dh = dy_load(k);
        if pm < 1.0 {
            dh = pm * (dh - phi * z * hd);
        }
        grad[k] = dh;
        zdh_part += z * dh;
    }
    let zdh = wg_sum(lid, zdh_part);
    let kz = c * phi * phi / max(r, MIN_NORM) * zdh;
    var dzz_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let z = scratch[off_zsum() + k] / den;
        let dz = phi * grad[k] + kz * z;
        grad[k] = dz / den;
        dzz_part += dz * z;
    }
    let dzz = wg_sum(lid, dzz_part);
    if lid == 0u {
        grad[d] = select(0.0, -dzz / den, den_raw > MIN_NORM);
    }
}

fn point_grad(p: u32) {
    if p >= params.p {
        return;
    }
    let d = params.d;
    let c = params.c;
    let base = point_base(p, d, params.s);
    var vv = 0.0;
    var sv = 0.0;
    for (var k = 0u; k < d; k++) {
        let v = x_load(base + k * params.s);
        vv += v * v;
        sv += grad[k] * v;
    }
    let n = max(sqrt(vv), MIN_NORM);
    let s = proj_scale(n, params.max_norm);
    let lambda = conformal(c, s * s * vv);
    let kappa = c * lambda * lambda * (s * sv + grad[d]);
    // v . dx over |v|^2, for the projection's Jacobian.
    let vdx = (lambda * sv + kappa * s * vv) / (n * n);
    for (var k = 0u; k < d; k++) {
        let i = base + k * params.s;
        let v = x_load(i);
        var g = lambda * grad[k] + kappa * s * v;
        if s < 1.0 {
            g = s * (g - v * vdx);
        }
        dx_store(i, g);
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if GSTAGE == 0u {
        mean_grad(lid);
    } else {
        point_grad((wid.x + wid.y * nwg.x) * WG + lid);
    }
}

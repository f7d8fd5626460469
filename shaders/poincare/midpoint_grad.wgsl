// The gyromidpoint's backward (docs/methods.md C1), after the forward's WEIGHTS, COLSUM and MEAN
// stages (`midpoint.wgsl`) in the same scratch:
//   GSTAGE 0 (one workgroup): `mean_grad` (`mean_grad.wgsl`) into `grad` ([dS (d) | dT]).
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

// The mean's backward (`mean_grad.wgsl`) reads dm from dy and keeps [dS | dT] in grad.
fn dm_in(k: u32) -> f32 {
    return dy_load(k);
}
fn ds_load(k: u32) -> f32 {
    return grad[k];
}
fn ds_store(k: u32, v: f32) {
    grad[k] = v;
}
fn dt_store(v: f32) {
    grad[params.d] = v;
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

// Naive Poincaré gyromidpoint, the benchmark baseline for the hyperbolic family: what a first
// attempt looks like, three stages (STAGE) of one invocation per item:
//   0: per point: project onto the ball, conformal factor l = 2 / (1 - c|x|^2); store l times
//      the projection's scale, and l - 1;
//   1: per coordinate k < D: sum over all points of the stored weight times x_k (k = D: the
//      sum of l - 1);
//   2: one invocation: z = num / den, m = project(z / (1 + sqrt(1 - c|z|^2))).
// Points are [n, d, s] views as in poincare/common.wgsl (NCHW: d = C, s = H*W).

override WG: u32 = 64u;
override STAGE: u32 = 0u;

struct NaiveBallParams {
    d: u32,
    s: u32,
    p: u32,
    _pad: u32,
    c: f32,
    max_norm: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: NaiveBallParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;

fn coordinate(point: u32, k: u32) -> f32 {
    let i = point / params.s;
    return x[(i * params.d + k) * params.s + point % params.s];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (STAGE == 0u) {
        if (i >= params.p) {
            return;
        }
        var q = 0.0;
        for (var k = 0u; k < params.d; k = k + 1u) {
            let v = coordinate(i, k);
            q = q + v * v;
        }
        let n = max(sqrt(q), 1e-15);
        let scale = select(1.0, params.max_norm / n, n > params.max_norm);
        let l = 2.0 / max(1.0 - params.c * q * scale * scale, 1e-15);
        weights[i] = vec2<f32>(l * scale, l - 1.0);
    } else if (STAGE == 1u) {
        if (i > params.d) {
            return;
        }
        var acc = 0.0;
        for (var j = 0u; j < params.p; j = j + 1u) {
            let w = weights[j];
            if (i == params.d) {
                acc = acc + w.y;
            } else {
                acc = acc + w.x * coordinate(j, i);
            }
        }
        sums[i] = acc;
    } else {
        if (i != 0u) {
            return;
        }
        let den = max(sums[params.d], 1e-15);
        var zz = 0.0;
        for (var k = 0u; k < params.d; k = k + 1u) {
            let z = sums[k] / den;
            zz = zz + z * z;
        }
        let f = 1.0 / (1.0 + sqrt(max(1.0 - params.c * zz, 0.0)));
        let n = max(sqrt(zz) * f, 1e-15);
        let scale = f * select(1.0, params.max_norm / n, n > params.max_norm);
        for (var k = 0u; k < params.d; k = k + 1u) {
            m[k] = sums[k] / den * scale;
        }
    }
}

// Batch-statistics backward, phase 3: dx per element from its slot's coefficients
// (mean, rstd, sum(g) / M, sum(g * xhat) / M): dx = rstd * (g - c1 - xhat * c2).

override WG: u32 = 64u;

@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> coef: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;

// (Ifs, not select: without a weight or bias a dummy without element `ch` is bound.)
fn weight_at(ch: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight[ch];
    }
    return 1.0;
}

fn bias_at(ch: u32) -> f32 {
    if (HAS_BIAS) {
        return bias[ch];
    }
    return 0.0;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_group(wid, nwg) * WG + lid;
    if (e >= params.total) {
        return;
    }
    // e = ((p * Q + q) * R + r) * S + s.
    let s = e % params.s;
    let rest = e / params.s;
    let rr = rest % params.r;
    let pp = rest / (params.r * params.q);
    let ch = rr * params.cg + s / params.sdiv;
    let k = coef[pp * params.r + rr];
    let w = weight_at(ch);
    let b = bias_at(ch);
    let xhat = (to_v(x[e]) - k.x) * k.y;
    let g = act_grad(to_v(dy[e]), xhat * w + b) * w;
    dx[e] = from_v(k.y * (g - k.z - xhat * k.w));
}

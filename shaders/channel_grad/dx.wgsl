// Batch-statistics backward, phase 3: dx per element from its slot's coefficients
// (shift, delta, rstd, e) and (sum(g) / M, sum(g * xhat) / M): with
// xhat = ((x - shift) - delta) * rstd - e, dx = rstd * (g - c1 - xhat * c2).

override WG: u32 = 64u;

@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// Two per slot: (shift, delta, rstd, e), (c1, c2, 0, 0).
@group(0) @binding(5) var<storage, read> coef: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;
// The input of a method's gradient term (see `chgrad::GradTerm`): the term's snippet defines
// `term_dx(x, dy, ch) -> f32`, added to dx, and may read this.
@group(0) @binding(7) var<storage, read> term_input: array<f32>;

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

// A gradient term replaces g = dz * w by its own `term_g` (from its snippet).
override TERM_G: bool = false;

// Elements per invocation, walked with carried indices (CPU adapters: integer division per
// element dominated; GPUs: 1, so lanes stay interleaved and loads coalesce).
override BLOCK: u32 = 1u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Windows: invocations from group_base, indices the whole tensor's (bound from x_base).
    let e0 = (linear_group(wid, nwg) * WG + lid + params.group_base) * BLOCK;
    if (e0 >= params.total) {
        return;
    }
    let end = min(params.total, e0 + BLOCK);
    // e = ((p * Q + q) * R + r) * S + s, s = k * SDIV + t: decomposed once, then walked in runs
    // of one channel (t up to SDIV) with the coefficients loaded once per run.
    var s = e0 % params.s;
    let rest = e0 / params.s;
    var rr = rest % params.r;
    var pq = rest / params.r;
    var k = s / params.sdiv;
    var t = s - k * params.sdiv;
    var e = e0;
    loop {
        if (e >= end) {
            break;
        }
        let pp = pq / params.q;
        let ch = rr * params.cg + k;
        let slot = pp * params.r + rr;
        let k0 = coef[2u * slot];
        let k1 = coef[2u * slot + 1u];
        let w = weight_at(ch);
        let b = bias_at(ch);
        let run = min(end - e, params.sdiv - t);
        if (ACT != 0u || TERM_G) {
            for (var i = e; i < e + run; i++) {
                let li = i - params.x_base;
                let xv = x_load(li);
                let d = dy_load(li);
                let xhat = ((xv - k0.x) - k0.y) * k0.z - k0.w;
                var g = 0.0;
                if (TERM_G) {
                    g = term_g(xv, d, w, ch);
                } else {
                    g = act_grad(d, xhat * w + b) * w;
                }
                dx_store(li, k0.z * (g - k1.x - xhat * k1.y) + term_dx(xv, d, ch));
            }
        } else {
            // dx = A dy + B xhat + C: rstd (w dy - c1 - xhat c2) expanded.
            let ca = k0.z * w;
            let cb = -k0.z * k1.y;
            let cc = -k0.z * k1.x;
            for (var i = e; i < e + run; i++) {
                let li = i - params.x_base;
                let xv = x_load(li);
                var xhat = ((xv - k0.x) - k0.y) * k0.z - k0.w;
                if (NORM == 3u) {
                    // L1: the norm's gradient is sign(x) (times the target, as xhat's t).
                    xhat = sign(xv) * params.norm_target;
                }
                let d = dy_load(li);
                dx_store(li, ca * d + cb * xhat + cc + term_dx(xv, d, ch));
            }
        }
        e += run;
        s += run;
        t += run;
        if (t == params.sdiv) {
            t = 0u;
            k += 1u;
        }
        if (s == params.s) {
            s = 0u;
            k = 0u;
            t = 0u;
            rr += 1u;
            if (rr == params.r) {
                rr = 0u;
                pq += 1u;
            }
        }
    }
}

// Batch-statistics backward, phase 1: workgroup (p, channel, tile) sums dz and dz * xhat over its
// tile of the channel's Q * SDIV elements in sample p (tree sum), into partials (vec2 per
// (p, channel, tile)). No atomics: fixed-order sums, bitwise reproducible.

override WG: u32 = 256u;

var<workgroup> red2: array<vec2<f32>, WG>;

// Tree sum of two values over the workgroup, returned to every lane (uniform control flow).
fn wg_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    workgroupBarrier();
    red2[lid] = v;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red2[lid] += red2[lid + h];
        }
    }
    workgroupBarrier();
    return red2[0];
}

@group(0) @binding(4) var<storage, read> x: array<Elem>;
@group(0) @binding(5) var<storage, read> dy: array<Elem>;
@group(0) @binding(6) var<storage, read> weight: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<vec2<f32>>;

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
    let g = linear_group(wid, nwg);
    let c = channels();
    if (g >= params.p * c * params.tiles) {
        return;
    }
    let tile = g % params.tiles;
    let pc = g / params.tiles;
    let ch = pc % c;
    let pp = pc / c;
    let rr = ch / params.cg;
    let st = slot_stats(pp * params.r + rr);
    let w = weight_at(ch);
    let b = bias_at(ch);
    let len = params.q * params.sdiv;
    let start = tile * params.tile_len;
    let end = min(len, start + params.tile_len);
    let s0 = (ch % params.cg) * params.sdiv;
    // Element j of the channel is (q, t) = (j / SDIV, j % SDIV); lanes step by WG with a carry
    // instead of dividing per element.
    let dq = WG / params.sdiv;
    let dt = WG - dq * params.sdiv;
    let j0 = start + lid;
    var qq = j0 / params.sdiv;
    var t = j0 - qq * params.sdiv;
    var acc = vec2<f32>(0.0);
    for (var j = j0; j < end; j += WG) {
        let e = ((pp * params.q + qq) * params.r + rr) * params.s + s0 + t;
        let xhat = (to_v(x[e]) - st.x) * st.y;
        let dz = act_grad(to_v(dy[e]), xhat * w + b);
        acc += vec2<f32>(dz, dz * xhat);
        t += dt;
        qq += dq;
        if (t >= params.sdiv) {
            t -= params.sdiv;
            qq += 1u;
        }
    }
    let sums = wg_sum2(lid, acc);
    if (lid == 0u) {
        partials[g] = sums;
    }
}

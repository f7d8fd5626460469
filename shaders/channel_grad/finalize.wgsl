// Batch-statistics backward, phase 2, one invocation per item in a fixed order:
//   ROLE 0, item = slot (p, r): coef[slot] = (mean, rstd, sum(g) / M, sum(g * xhat) / M) with
//     g = dz * w summed over the slot's channels and tiles (0, 0 with running statistics);
//   ROLE 1, item = channel: dweight = sum over p and tiles of dz * xhat, dbias = of dz;
//   ROLE 2, item 0 (RepBN, a BatchNorm view: slot = channel, no activation): dalpha =
//     sum(dy * x) = sum over channels of sum(dy * xhat) / rstd + mean * sum(dy).

override WG: u32 = 64u;
override ROLE: u32 = 0u;
// Batch statistics (training): dx goes through them. False: running statistics, constants.
override THROUGH_STATS: bool = true;
override HAS_DWEIGHT: bool = false;
override HAS_DBIAS: bool = false;

@group(0) @binding(4) var<storage, read> partials: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> coef: array<vec4<f32>>;
// ROLE 1 writes dweight and dbias; ROLE 2 writes dalpha, bound in dweight's place (a binding
// of its own would be a ninth storage buffer, past WebGPU's default limit).
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>;

// (Ifs, not select: without a weight or bias a dummy without element `ch` is bound.)
fn weight_at(ch: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight[ch];
    }
    return 1.0;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = linear_group(wid, nwg) * WG + lid;
    let c = channels();
    if (ROLE == 2u) {
        if (item != 0u) {
            return;
        }
        var acc = 0.0;
        // No samples (p = 0): the sum over nothing.
        for (var ch = 0u; ch < c && params.p > 0u; ch++) {
            let st = slot_stats(ch);
            var a = 0.0;
            var b = 0.0;
            for (var t = 0u; t < params.tiles; t++) {
                let v = partials[ch * params.tiles + t];
                a += v.x;
                b += v.y;
            }
            acc += b / st.y + st.x * a;
        }
        dweight[0] = acc;
        return;
    }
    if (ROLE == 1u) {
        if (item >= c) {
            return;
        }
        var a = 0.0;
        var b = 0.0;
        for (var pp = 0u; pp < params.p; pp++) {
            for (var t = 0u; t < params.tiles; t++) {
                let v = partials[(pp * c + item) * params.tiles + t];
                a += v.x;
                b += v.y;
            }
        }
        if (HAS_DWEIGHT) {
            dweight[item] = b;
        }
        if (HAS_DBIAS) {
            dbias[item] = a;
        }
        return;
    }
    if (item >= params.p * params.r) {
        return;
    }
    let pp = item / params.r;
    let rr = item % params.r;
    let st = slot_stats(item);
    var sg = 0.0;
    var sgx = 0.0;
    for (var k = 0u; k < params.cg; k++) {
        let ch = rr * params.cg + k;
        let w = weight_at(ch);
        for (var t = 0u; t < params.tiles; t++) {
            let v = partials[(pp * c + ch) * params.tiles + t];
            sg += w * v.x;
            sgx += w * v.y;
        }
    }
    let m = f32(params.q * params.cg * params.sdiv);
    if (THROUGH_STATS) {
        coef[item] = vec4<f32>(st.x, st.y, sg / m, sgx / m);
    } else {
        coef[item] = vec4<f32>(st.x, st.y, 0.0, 0.0);
    }
}

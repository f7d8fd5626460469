// Batch-statistics backward, phase 2, one invocation per item in a fixed order:
//   ROLE 0, item = slot (p, r): coef[2 slot] = (shift, delta, rstd, e), coef[2 slot + 1] =
//     (sum(g) / M, sum(g * xhat) / M, 0, 0) with g = dz * w summed over the slot's channels and
//     tiles (0, 0 with running statistics), where e = mean(xhat') corrects the partials' xhat'
//     (centred on an f32 mean) to the slot's exact centring: xhat = xhat' - e;
//   ROLE 1, item = channel: dweight = sum over p and tiles of dz * xhat, dbias = of dz (reads
//     role 0's e, bound in coef's place);
//   ROLE 2, item = element of a method's gradient term (`chgrad::GradTerm`): its parameter
//     gradient from the partials and the slot statistics (`term_grad`, from its snippet).

override WG: u32 = 64u;
override ROLE: u32 = 0u;
// Batch statistics (training): dx goes through them. False: running statistics, constants.
override THROUGH_STATS: bool = true;
override HAS_DWEIGHT: bool = false;
override HAS_DBIAS: bool = false;
// The forward centred x (c1 = mean(g) is subtracted); false for a term whose numerator is x
// itself (its partials then carry no xhat sums).
override CENTRED: bool = true;
// Role 2's items: one per channel, or one.
override TERM_PER_CHANNEL: bool = false;
// Role 0 takes each slot's sums from the term's `term_slot_sums`.
override TERM_SLOT_SUMS: bool = false;

// Per (p, channel, tile): (sum dz, sum dz * xhat', sum xhat', 0).
@group(0) @binding(4) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> coef: array<vec4<f32>>;
// ROLE 1 writes dweight and dbias; ROLE 2 writes the term's gradient, bound in dweight's place
// (a binding of its own would be a ninth storage buffer, past WebGPU's default limit).
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>;

// (Ifs, not select: without a weight or bias a dummy without element `ch` is bound.)
fn weight_at(ch: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight[ch];
    }
    return 1.0;
}

// Slot (pp, rr)'s (sum g, sum g xhat', sum xhat', count) over its channels and tiles, g = dz w.
fn slot_sums(pp: u32, rr: u32) -> vec4<f32> {
    let c = channels();
    var acc = vec3<f32>(0.0);
    for (var k = 0u; k < params.cg; k++) {
        let ch = rr * params.cg + k;
        let w = weight_at(ch);
        for (var t = 0u; t < params.tiles; t++) {
            let v = partials[(pp * c + ch) * params.tiles + t];
            acc += vec3<f32>(w * v.x, w * v.y, v.z);
        }
    }
    return vec4<f32>(acc, f32(params.q * params.cg * params.sdiv));
}

// dweight / dbias of channel ch: every sample's sums, xhat' corrected by its slot's e.
fn parameter_grads(ch: u32) {
    let c = channels();
    var a = 0.0;
    var b = 0.0;
    for (var pp = 0u; pp < params.p; pp++) {
        var ap = 0.0;
        var bp = 0.0;
        for (var t = 0u; t < params.tiles; t++) {
            let v = partials[(pp * c + ch) * params.tiles + t];
            ap += v.x;
            bp += v.y;
        }
        let e = coef[2u * (pp * params.r + ch / params.cg)].w;
        a += ap;
        b += bp - e * ap;
    }
    if (HAS_DWEIGHT) {
        dweight[ch] = b;
    }
    if (HAS_DBIAS) {
        dbias[ch] = a;
    }
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
        if (item < select(1u, c, TERM_PER_CHANNEL)) {
            term_grad(item);
        }
        return;
    }
    if (ROLE == 1u) {
        if (item < c) {
            parameter_grads(item);
        }
        return;
    }
    if (item >= params.p * params.r) {
        return;
    }
    let pp = item / params.r;
    let rr = item % params.r;
    let st = slot_stats(item);
    var sums = vec4<f32>(0.0);
    if (TERM_SLOT_SUMS) {
        sums = term_slot_sums(pp, rr);
    } else {
        sums = slot_sums(pp, rr);
    }
    let sg = sums.x;
    let sgx = sums.y;
    let sx = sums.z;
    let m = sums.w;
    if (THROUGH_STATS && NORM >= 2u) {
        // y = t x / norm: no mean, and the norm's gradient is a sum (not a mean) over the slot
        // (none where the norm is clamped, st.w = 0). dx = t rstd (g - xhat sum(g xhat)): the
        // scale t goes into rstd, so dx's xhat carries t once and c2 is divided by it.
        let t = params.norm_target;
        coef[2u * item] = vec4<f32>(0.0, 0.0, t * st.z, 0.0);
        coef[2u * item + 1u] = vec4<f32>(0.0, select(0.0, sgx * st.w / t, t != 0.0), 0.0, 0.0);
        return;
    }
    if (THROUGH_STATS) {
        // The mean the partials centred on may be an f32 rounding of the slot's (saved
        // statistics): e = mean(xhat') is that rounding in units of std, exactly, from sums of
        // exact differences, and sum(g * xhat) = sum(g * xhat') - e * sum(g).
        let e = sx / m;
        var c2 = (sgx - e * sg) / m;
        if (NORM == 1u) {
            // y = u / (std + eps): the std's gradient u / (M std) against the denominator.
            c2 = select(0.0, c2 / (st.z * st.w), st.w > 0.0);
        }
        coef[2u * item] = vec4<f32>(st.x, st.y, st.z, e);
        coef[2u * item + 1u] = vec4<f32>(select(0.0, sg / m, CENTRED), c2, 0.0, 0.0);
    } else {
        coef[2u * item] = vec4<f32>(st.x, st.y, st.z, 0.0);
        coef[2u * item + 1u] = vec4<f32>(0.0);
    }
}

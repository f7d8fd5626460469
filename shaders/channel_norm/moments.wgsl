// Phase 1: partial moments (count, mean, M2) of one tile of one slot per workgroup. Each lane
// keeps Welford moments of its accesses; the workgroup merges them with Chan's formula.

override WG: u32 = 256u;
// 0: mean and M2 (Welford). 1: sum of squares (L2 norm). 2: sum of absolute values (L1 norm);
// sums are kept in the m2 field with mean 0, which Chan's merge adds exactly.
override REDUCE: u32 = 0u;
override HAS_MASK: bool = false;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partials: array<Moments>;
// HAS_MASK (token views [1, T*B, C, 1] only, REDUCE 1): mask[b * T + t] = 1 marks padding, which
// is left out of the sums and the count. Access q of the slot is token (t, b) = (q / B, q % B).
@group(0) @binding(3) var<storage, read> mask: array<f32>;

fn load(pp: u32, rr: u32, j: u32) -> V {
    let q = j / params.s_v;
    let s = j - q * params.s_v;
    return to_v(x[((pp * params.q + q) * params.r + rr) * params.s_v + s]);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wid, nwg);
    let slots = params.p * params.r;
    let live = g < slots * params.tiles;
    let slot = g / params.tiles;
    let tile = g % params.tiles;
    let pp = slot / params.r;
    let rr = slot % params.r;
    let len = params.q * params.s_v;
    let start = tile * params.tile_len;
    let end = select(0u, min(len, start + params.tile_len), live);

    var acc = Moments(0.0, 0.0, 0.0);
    if (HAS_MASK) {
        let tokens_t = params.q / params.mask_b;
        for (var j = start + lid; j < end; j = j + WG) {
            let keep = 1.0 - mask[(j % params.mask_b) * tokens_t + j / params.mask_b];
            let v = load(pp, rr, j);
            acc.n = acc.n + keep * f32(VW);
            acc.m2 = acc.m2 + keep * hsum(v * v);
        }
    }
    // Chunks of four accesses: an exact two-pass mean and M2 over the chunk in registers, then
    // one Chan merge, so the divisions are per chunk rather than per element.
    for (var j = start + lid; j < select(end, start, HAS_MASK); j = j + 4u * WG) {
        let ok1 = j + WG < end;
        let ok2 = j + 2u * WG < end;
        let ok3 = j + 3u * WG < end;
        let v0 = load(pp, rr, j);
        let v1 = select(V(0.0), load(pp, rr, j + WG), ok1);
        let v2 = select(V(0.0), load(pp, rr, j + 2u * WG), ok2);
        let v3 = select(V(0.0), load(pp, rr, j + 3u * WG), ok3);
        acc = push4(acc, v0, v1, v2, v3, 1u + u32(ok1) + u32(ok2) + u32(ok3));
    }
    let merged = workgroup_merge(acc, lid);
    if (live && lid == 0u) {
        partials[g] = merged;
    }
}

// Phase 1: partial moments (count, mean, M2) of one tile of one slot per workgroup. Each lane
// keeps Welford moments of its accesses; the workgroup merges them with Chan's formula.

override WG: u32 = 256u;
// 0: mean and M2 (Welford). 1: sum of squares (L2 norm). 2: sum of absolute values (L1 norm);
// sums are kept in the m2 field with mean 0, which Chan's merge adds exactly.
override REDUCE: u32 = 0u;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partials: array<Moments>;

var<workgroup> red_n: array<f32, WG>;
var<workgroup> red_mean: array<f32, WG>;
var<workgroup> red_m2: array<f32, WG>;

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
    for (var j = start + lid; j < end; j = j + WG) {
        let q = j / params.s_v;
        let s = j - q * params.s_v;
        let v = to_v(x[((pp * params.q + q) * params.r + rr) * params.s_v + s]);
        if (REDUCE == 0u) {
            acc = moments_push(acc, v);
        } else if (REDUCE == 1u) {
            acc.n = acc.n + f32(VW);
            acc.m2 = acc.m2 + hsum(v * v);
        } else {
            acc.n = acc.n + f32(VW);
            acc.m2 = acc.m2 + hsum(abs(v));
        }
    }
    red_n[lid] = acc.n;
    red_mean[lid] = acc.mean;
    red_m2[lid] = acc.m2;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h >> 1u) {
        if (lid < h) {
            let m = moments_merge(
                Moments(red_n[lid], red_mean[lid], red_m2[lid]),
                Moments(red_n[lid + h], red_mean[lid + h], red_m2[lid + h]),
            );
            red_n[lid] = m.n;
            red_mean[lid] = m.mean;
            red_m2[lid] = m.m2;
        }
        workgroupBarrier();
    }
    if (live && lid == 0u) {
        partials[g] = Moments(red_n[0], red_mean[0], red_m2[0]);
    }
}

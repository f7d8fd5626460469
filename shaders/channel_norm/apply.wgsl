// Phase 3: y = act((x - mean) * scale + shift), one access per invocation, (mean, scale, shift)
// per (p, channel) from the finalize pass. Invocation 0 also advances num_batches_tracked when
// COUNT_BATCH (it runs after finalize has read it).

override WG: u32 = 256u;
// 0: none. 1: SiLU (x * sigmoid(x)).
override ACT: u32 = 0u;
override COUNT_BATCH: bool = false;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> scale_shift: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<Elem>;
@group(0) @binding(4) var<storage, read_write> batches: array<u32>;

fn activate(v: V) -> V {
    if (ACT == 1u) {
        return v / (1.0 + exp(-v));
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_group(wid, nwg) * WG + lid;
    if (COUNT_BATCH && e == 0u) {
        batches[0] = batches[0] + 1u;
    }
    if (e >= params.total_v) {
        return;
    }
    let s = e % params.s_v;
    let t = e / params.s_v;
    let rr = t % params.r;
    let pp = t / (params.r * params.q);
    // A vector of VW elements never crosses a channel (the host checks SDIV % VW == 0).
    let ch = rr * params.cg + (s * VW) / params.sdiv;
    let ss = scale_shift[pp * params.r * params.cg + ch];
    y[e] = from_v(activate((to_v(x[e]) - ss.x) * ss.y + ss.z));
}

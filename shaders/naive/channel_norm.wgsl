// Naive batch-statistics norm (BatchNorm / GroupNorm / InstanceNorm), the benchmark baseline:
// what a first attempt looks like. Three stages (STAGE), each one invocation per item with no
// cooperation between lanes:
//   0: per plane (sample n, channel c): mean and M2 of its H*W elements, two passes;
//   1: per statistic slot: Chan's merge of its planes, then rstd = 1/sqrt(var + eps);
//   2: per element: y = act((x - mean) * rstd * weight[c] + bias[c]).
// Planes are walked with strides, so NCHW and NHWC both work (and NHWC is as slow as it gets).
//
// Slots: BatchNorm one per channel (its planes: n = 0..N), GroupNorm one per (n, group) (its
// planes: the group's channels of sample n), InstanceNorm one per plane.

override WG: u32 = 64u;
override STAGE: u32 = 0u;
override HAS_AFFINE: bool = true;

struct NaiveParams {
    // Planes (N * C), elements per plane (H * W), channels.
    planes: u32,
    hw: u32,
    c: u32,
    // Element stride between consecutive positions of a plane, and between channels
    // (NCHW: 1 and H*W; NHWC: C and 1). Samples are C*H*W apart.
    stride_s: u32,
    stride_c: u32,
    // Statistic slots and planes per slot.
    slots: u32,
    per_slot: u32,
    // Slot j's k-th plane: (j / slot_div) * C + (j % slot_div) * cpg + k * kstride.
    slot_div: u32,
    cpg: u32,
    kstride: u32,
    // Element (n, c)'s slot: n * slot_n + c / cpg.
    slot_n: u32,
    eps: f32,
    // SELU epilogue constants (the activation snippet reads them).
    selu_alpha: f32,
    selu_lambda: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: NaiveParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// Per plane: (mean, M2).
@group(0) @binding(5) var<storage, read_write> plane_stats: array<vec2<f32>>;
// Per slot: (mean, rstd).
@group(0) @binding(6) var<storage, read_write> slot_stats: array<vec2<f32>>;

fn element(plane: u32, s: u32) -> u32 {
    let n = plane / params.c;
    let ch = plane % params.c;
    return n * params.c * params.hw + ch * params.stride_c + s * params.stride_s;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (STAGE == 0u) {
        if (i >= params.planes) {
            return;
        }
        var s = 0.0;
        for (var k = 0u; k < params.hw; k = k + 1u) {
            s = s + x[element(i, k)];
        }
        let mean = s / f32(params.hw);
        var m2 = 0.0;
        for (var k = 0u; k < params.hw; k = k + 1u) {
            let d = x[element(i, k)] - mean;
            m2 = m2 + d * d;
        }
        plane_stats[i] = vec2<f32>(mean, m2);
    } else if (STAGE == 1u) {
        if (i >= params.slots) {
            return;
        }
        let first = (i / params.slot_div) * params.c + (i % params.slot_div) * params.cpg;
        var n = 0.0;
        var mean = 0.0;
        var m2 = 0.0;
        let nb = f32(params.hw);
        for (var k = 0u; k < params.per_slot; k = k + 1u) {
            let b = plane_stats[first + k * params.kstride];
            let total = n + nb;
            let delta = b.x - mean;
            mean = mean + delta * (nb / total);
            m2 = m2 + b.y + delta * delta * (n * nb / total);
            n = total;
        }
        slot_stats[i] = vec2<f32>(mean, inverseSqrt(max(m2 / n, 0.0) + params.eps));
    } else {
        let total = params.planes * params.hw;
        if (i >= total) {
            return;
        }
        let per_n = params.c * params.hw;
        let n = i / per_n;
        let ch = (i % per_n) / params.stride_c % params.c;
        let st = slot_stats[n * params.slot_n + ch / params.cpg];
        var o = (x[i] - st.x) * st.y;
        if (HAS_AFFINE) {
            o = o * weight[ch] + bias[ch];
        }
        y[i] = activate(o);
    }
}

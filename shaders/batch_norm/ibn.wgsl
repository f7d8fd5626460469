// IBN-Net's IBN-a mixing (the method notes in docs/methods.md): channels c < half keep their
// instance statistics (InstanceNorm); the others merge theirs over n with Chan's formula
// (BatchNorm) in training, or take the running statistics (inference); training updates
// running_mean/var [C - half] (run_a, run_b) with the unbiased variance.

struct IbnParams {
    n: u32,
    c: u32,
    // Channels of the InstanceNorm part.
    half: u32,
    _pad0: u32,
    eps: f32,
    momentum: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: IbnParams;

override WG: u32 = 64u;
override TRAINING: bool = false;
const UNBIASED_RUNNING: bool = true;

fn ibn(ch: u32) {
    let c = params.c;
    if ch < params.half {
        for (var n = 0u; n < params.n; n++) {
            let m = inst(n, ch);
            set_norm_coefs(n, ch, m.mean, rsqrt_var(m.m2 / m.n + params.eps) * weight[ch]);
        }
        return;
    }
    let rc = ch - params.half;
    var mean = run_a[rc];
    var var_b = run_b[rc];
    if TRAINING {
        let acc = batch_moments(ch);
        mean = acc.mean;
        var_b = acc.m2 / acc.n;
        let m = params.momentum;
        run_a[rc] = (1.0 - m) * run_a[rc] + m * mean;
        run_b[rc] = (1.0 - m) * run_b[rc] + m * running_variance(acc, UNBIASED_RUNNING);
    }
    let sc = rsqrt_var(var_b + params.eps) * weight[ch];
    for (var n = 0u; n < params.n; n++) {
        set_norm_coefs(n, ch, mean, sc);
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ch = mix_channel(wid, nwg, lid);
    if ch < params.c {
        ibn(ch);
    }
}

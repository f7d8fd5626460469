// AdaB2N with task-weighted statistics (docs/methods.md): per-sample weights w_n = p_t / count_t
// for sample n of task t (task ids in `assign` as f32, read only), p_t = (exp(theta_t) + count_t)
// / sum_t'(exp(theta_t') + count_t') with theta = aux [T]; mean = sum_n w_n mean_n, var =
// sum_n w_n (var_n + (mean_n - mean)^2); the running mean and (biased) variance (run_a, run_b)
// move by `momentum` (this step's eta).

struct AdaB2nParams {
    n: u32,
    c: u32,
    tasks: u32,
    _pad0: u32,
    eps: f32,
    momentum: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: AdaB2nParams;

override WG: u32 = 64u;

fn task_of(n: u32) -> u32 {
    return min(u32(max(assign[n], 0.0)), params.tasks - 1u);
}

fn task_count(t: u32) -> f32 {
    var cnt = 0.0;
    for (var n = 0u; n < params.n; n++) {
        cnt += select(0.0, 1.0, task_of(n) == t);
    }
    return cnt;
}

// Every channel recomputes the task weights, O(N^2 + N T) per channel (a count per sample):
// fine for the small batches and task counts of continual learning, and no extra pass or
// scratch binding (the mixing kernel has none left).
fn adab2n(ch: u32) {
    var total = 0.0;
    for (var t = 0u; t < params.tasks; t++) {
        total += exp(aux[t]) + task_count(t);
    }
    var mean = 0.0;
    for (var n = 0u; n < params.n; n++) {
        let t = task_of(n);
        let w = (exp(aux[t]) + task_count(t)) / total / task_count(t);
        mean += w * inst(n, ch).mean;
    }
    var var_w = 0.0;
    for (var n = 0u; n < params.n; n++) {
        let t = task_of(n);
        let w = (exp(aux[t]) + task_count(t)) / total / task_count(t);
        let m = inst(n, ch);
        let d = m.mean - mean;
        var_w += w * (m.m2 / m.n + d * d);
    }
    let eta = params.momentum;
    run_a[ch] = run_a[ch] + eta * (mean - run_a[ch]);
    run_b[ch] = (1.0 - eta) * run_b[ch] + eta * var_w;
    let sc = rsqrt_var(var_w + params.eps) * weight[ch];
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
        adab2n(ch);
    }
}

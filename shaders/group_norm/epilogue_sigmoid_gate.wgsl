// EvoNorm-S0's epilogue (see docs/methods.md): y = x * sigmoid(v * x) * scale + shift with
// v = aux[channel] (no centring: the finalize pass folded the group's rstd into scale).

const COEF_ARRAYS: u32 = 3u;

fn epilogue_extra(p: u32, ch: u32, c: u32, k: Coefs) -> Coefs {
    var o = k;
    o.e0 = aux_at(ch);
    return o;
}

fn epilogue(xv: V, k: Coefs) -> V {
    return xv / (1.0 + exp(-k.e0 * xv)) * k.scale + k.shift;
}

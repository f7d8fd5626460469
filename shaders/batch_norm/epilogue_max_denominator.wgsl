// EvoNorm-B0's epilogue (see docs/methods.md): five arrays per sample [a][b][weight][bias][v]
// written by its mixing kernel; y = x / max(a, v * x + b) * weight + bias (mean = a, scale = b,
// shift = weight, e1 = bias, e0 = v).

const COEF_ARRAYS: u32 = 5u;

fn epilogue_extra(p: u32, ch: u32, c: u32, k: Coefs) -> Coefs {
    var o = k;
    o.e1 = coef_at(p, ch, c, 3u);
    o.e0 = coef_at(p, ch, c, 4u);
    return o;
}

fn epilogue(xv: V, k: Coefs) -> V {
    return xv / max(k.mean, k.e0 * xv + k.scale) * k.shift + k.e1;
}

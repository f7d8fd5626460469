// RepBN's epilogue (see docs/methods.md): y = BN(x) + alpha * x, alpha = aux[0], a learnable
// scalar kept on the GPU.

const COEF_ARRAYS: u32 = 3u;

fn epilogue_extra(p: u32, ch: u32, c: u32, k: Coefs) -> Coefs {
    return k;
}

fn epilogue(xv: V, k: Coefs) -> V {
    return (xv - k.mean) * k.scale + k.shift + aux[0] * xv;
}

// The engine's epilogue: y = (x - mean) * scale + shift (see apply.wgsl for the interface).

const COEF_ARRAYS: u32 = 3u;

fn epilogue_extra(p: u32, ch: u32, c: u32, k: Coefs) -> Coefs {
    return k;
}

fn epilogue(xv: V, k: Coefs) -> V {
    return (xv - k.mean) * k.scale + k.shift;
}

// EvoNorm-S0's backward, dx part: g = w dy h'(x) with h = x sigmoid(v x), so
// dx = rstd (g - xhat mean(w dy h rstd)) (the engine's, not centred: c1 = 0).

fn term_g(x: f32, dy: f32, w: f32, ch: u32) -> f32 {
    let v = term_input[ch];
    let s = 1.0 / (1.0 + exp(-v * x));
    return w * dy * (s + v * x * s * (1.0 - s));
}

fn term_dx(x: f32, dy: f32, ch: u32) -> f32 {
    return 0.0;
}

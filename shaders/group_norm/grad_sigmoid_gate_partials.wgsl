// EvoNorm-S0's backward sums (docs/methods.md A15): y = w h r + b with h = x sigmoid(v x) and r
// the slot's rstd (no centring). Per element: (dy, dy h r, 0, dy r x^2 s (1 - s)), s the gate;
// the engine turns .x into dbias, .y into dweight and c2 = mean(w dy h r), and the finalize
// snippet .w into dv. v = the term input, per channel.

fn term_partial(x: f32, dy: f32, st: vec4<f32>, w: f32, ch: u32) -> vec4<f32> {
    let v = term_input_at(ch);
    let s = 1.0 / (1.0 + exp(-v * x));
    let r = st.z;
    return vec4<f32>(dy, dy * x * s * r, 0.0, dy * r * x * x * s * (1.0 - s));
}

// I/O snippet: f16 storage without SHADER_F16, one element per access. Halves live in u32
// words: the composer declares every binding of the element type as words (`array<u32>`, and
// `array<atomic<u32>>` when writable) and gives kernels an accessor pair per binding,
// `NAME_load(i)` and `NAME_store(i, v)`, through which element i is the low (even i) or high
// (odd i) half of word i / 2. A store clears and then sets only its own half, each with one
// atomic, so the two invocations owning the halves of one word (a row, channel or window
// boundary at an odd length) never lose each other's half, and a half outside the tensor (the
// binding's padding, a neighbour in the same buffer) is left as it was. Conversions are
// common/half.wgsl's (exact, ties to even): bit-identical to the SHADER_F16 path.
alias V = f32;
const VW: u32 = 1u;
fn hsum(v: V) -> f32 { return v; }
fn set_lane(v: V, k: u32, val: f32) -> V { return val; }
fn get_lane(v: V, k: u32) -> f32 { return v; }
fn v_from4(v: vec4<f32>) -> V { return v.x; }
fn first_lanes(a: V, b: V, n: u32) -> V { return select(b, a, 0u < n); }
// Element i's half of word w, widened.
fn half_in_word(w: u32, i: u32) -> f32 {
    return half_to_f32(vec4<u32>((w >> ((i & 1u) * 16u)) & 0xffffu)).x;
}
// v rounded to f16 bits (in the low 16 bits).
fn half_bits(v: f32) -> u32 {
    return f32_to_half(vec4<f32>(v)).x;
}

// I/O snippet: bf16 storage (the upper 16 bits of an f32), four consecutive elements per access
// (8 bytes) read and written as two packed u32 words. Widening is a shift; narrowing rounds to
// nearest even and keeps NaN a (quiet) NaN. Arithmetic in f32, one rounding to bf16 on store.
// There is no element-wise bf16 access: WGSL cannot store 16 bits, so bf16 rows are a multiple
// of 4 elements long (the host refuses other rows with a typed error).
alias Elem = vec2<u32>;
alias V = vec4<f32>;
const VW: u32 = 4u;
fn to_v(e: Elem) -> V {
    let w = vec4<u32>(e.x << 16u, e.x & 0xffff0000u, e.y << 16u, e.y & 0xffff0000u);
    return bitcast<vec4<f32>>(w);
}
fn bf16_bits(v: V) -> vec4<u32> {
    let b = bitcast<vec4<u32>>(v);
    let rounded = (b + vec4<u32>(0x7fffu) + ((b >> vec4<u32>(16u)) & vec4<u32>(1u))) >> vec4<u32>(16u);
    // NaN (exponent all ones, mantissa non-zero): truncate and set the quiet bit, so rounding
    // cannot carry a NaN into an infinity.
    let nan = (b & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
    return select(rounded, (b >> vec4<u32>(16u)) | vec4<u32>(0x40u), nan);
}
fn from_v(v: V) -> Elem {
    let h = bf16_bits(v);
    return vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u));
}

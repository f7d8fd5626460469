// I/O snippet: f16 storage, four consecutive elements per access (8 bytes), read and written as
// two packed u32 words with unpack2x16float/pack2x16float: no SHADER_F16 needed, and software
// rasterisers convert packed words much faster than f16 vector loads. Arithmetic in f32, one
// rounding to f16 on store.
alias Elem = vec2<u32>;
alias V = vec4<f32>;
const VW: u32 = 4u;
fn to_v(e: Elem) -> V {
    return half_to_f32(vec4<u32>(e.x, e.x >> 16u, e.y, e.y >> 16u) & vec4<u32>(0xffffu));
}
fn from_v(v: V) -> Elem {
    let h = f32_to_half(v);
    return vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u));
}

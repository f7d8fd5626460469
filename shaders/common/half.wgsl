// binary16 <-> binary32 conversions in integer and float arithmetic, exact (IEEE
// round-to-nearest-even, subnormals, infinities, NaN), for the packed f16 I/O snippet.
// Software rasterisers run unpack2x16float / pack2x16float through a much longer generic path.
// The tricks (a rebias in the exponent field, a "magic" float add for subnormals) are those of
// F. Giesen's half <-> float conversions; every select is branch-free on vectors.

// Four f16 bit patterns (low 16 bits of each lane) to f32.
fn half_to_f32(h: vec4<u32>) -> vec4<f32> {
    let em = h & vec4<u32>(0x7fffu);
    // Normal numbers: move into place and rebias the exponent (15 -> 127). Infinity and NaN
    // (exponent 31) need exponent 255: rebias twice.
    var o = (em << vec4<u32>(13u)) + vec4<u32>(0x38000000u);
    o = select(o, o + vec4<u32>(0x38000000u), em >= vec4<u32>(0x7c00u));
    // Zero and subnormals: with the exponent set to -14, 2^-14 (1 + m/1024) - 2^-14 is m * 2^-24
    // exactly (no f32 denormal involved, so flush-to-zero modes cannot touch it).
    let sub = bitcast<vec4<f32>>(o + vec4<u32>(0x00800000u)) - vec4<f32>(6.103515625e-05);
    o = select(o, bitcast<vec4<u32>>(sub), em < vec4<u32>(0x400u));
    return bitcast<vec4<f32>>(o | ((h & vec4<u32>(0x8000u)) << vec4<u32>(16u)));
}

// Four f32 to f16 bit patterns (in the low 16 bits), rounding to nearest even; values from
// 65520 up become infinities, NaN a quiet NaN.
fn f32_to_half(v: vec4<f32>) -> vec4<u32> {
    let b = bitcast<vec4<u32>>(v);
    let a = b & vec4<u32>(0x7fffffffu);
    // Normal range: rebias (127 -> 15, as a wrapping add), add half an f16 ulp minus one plus
    // the kept lsb (ties to even), truncate. A carry out of the mantissa bumps the exponent,
    // which is the correct rounding (up to infinity at 65520).
    let lsb = (a >> vec4<u32>(13u)) & vec4<u32>(1u);
    var h = (a + vec4<u32>(0xc8000fffu) + lsb) >> vec4<u32>(13u);
    // Below 2^-14: adding 0.5 (whose ulp is 2^-24, an f16 subnormal step) rounds |v| to a
    // subnormal count in the low mantissa bits, by the FPU's own round-to-nearest-even.
    let sub = bitcast<vec4<u32>>(bitcast<vec4<f32>>(a) + vec4<f32>(0.5)) - vec4<u32>(0x3f000000u);
    h = select(h, sub, a < vec4<u32>(0x38800000u));
    // 65536 and up (where the rebias would overflow the field), infinity, NaN.
    let big = select(vec4<u32>(0x7c00u), vec4<u32>(0x7e00u), a > vec4<u32>(0x7f800000u));
    h = select(h, big, a >= vec4<u32>(0x47800000u));
    return h | ((b >> vec4<u32>(16u)) & vec4<u32>(0x8000u));
}

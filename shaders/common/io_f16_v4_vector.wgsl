// I/O snippet: f16 storage, four consecutive elements per access (8 bytes) as `vec4<f16>`, for
// devices with SHADER_F16: the device's own f16 <-> f32 conversions, once per vector.
// Arithmetic in f32, one rounding to f16 on store. (A `bitcast<vec2<f16>>` of packed words
// would keep the u32 bindings, but lavapipe returned wrong values for it.)
enable f16;
alias Elem = vec4<f16>;
alias V = vec4<f32>;
const VW: u32 = 4u;
fn to_v(e: Elem) -> V { return vec4<f32>(e); }
fn from_v(v: V) -> Elem { return vec4<f16>(v); }

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
fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }
fn set_lane(v: V, k: u32, val: f32) -> V {
    var t = v;
    t[k] = val;
    return t;
}
fn get_lane(v: V, k: u32) -> f32 { return v[k]; }
fn v_from4(v: vec4<f32>) -> V { return v; }
fn first_lanes(a: V, b: V, n: u32) -> V { return select(b, a, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n)); }

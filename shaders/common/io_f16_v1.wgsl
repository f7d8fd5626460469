// I/O snippet: f16 storage (needs SHADER_F16), one element per access; arithmetic in f32 and a
// single rounding to f16 on store.
enable f16;
alias Elem = f16;
alias V = f32;
const VW: u32 = 1u;
fn to_v(e: Elem) -> V { return f32(e); }
fn from_v(v: V) -> Elem { return f16(v); }
fn hsum(v: V) -> f32 { return v; }
fn set_lane(v: V, k: u32, val: f32) -> V { return val; }
fn get_lane(v: V, k: u32) -> f32 { return v; }
fn v_from4(v: vec4<f32>) -> V { return v.x; }
fn first_lanes(a: V, b: V, n: u32) -> V { return select(b, a, 0u < n); }

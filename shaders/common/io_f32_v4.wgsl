// I/O snippet: f32 storage, four consecutive elements per access (16-byte loads/stores).
// Used when the reduced length is a multiple of 4 and every binding offset is 16-byte aligned.
alias Elem = vec4<f32>;
alias V = vec4<f32>;
const VW: u32 = 4u;
fn to_v(e: Elem) -> V { return e; }
fn from_v(v: V) -> Elem { return v; }
fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }
fn set_lane(v: V, k: u32, val: f32) -> V {
    var t = v;
    t[k] = val;
    return t;
}
fn get_lane(v: V, k: u32) -> f32 { return v[k]; }
fn v_from4(v: vec4<f32>) -> V { return v; }
fn first_lanes(a: V, b: V, n: u32) -> V { return select(b, a, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n)); }

// The lane helpers of every four-element I/O snippet (V = vec4<f32>), composed after it:
// horizontal sum, one lane read or replaced, a vec4 as V, the first n lanes of a else b.
fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }
fn set_lane(v: V, k: u32, val: f32) -> V {
    var t = v;
    t[k] = val;
    return t;
}
fn get_lane(v: V, k: u32) -> f32 { return v[k]; }
fn v_from4(v: vec4<f32>) -> V { return v; }
fn first_lanes(a: V, b: V, n: u32) -> V { return select(b, a, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n)); }

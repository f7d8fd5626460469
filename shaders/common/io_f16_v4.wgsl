// I/O snippet: f16 storage (needs SHADER_F16), four consecutive elements per access (8 bytes);
// arithmetic in f32 and a single rounding to f16 on store.
enable f16;
alias Elem = vec4<f16>;
alias V = vec4<f32>;
const VW: u32 = 4u;
fn to_v(e: Elem) -> V { return vec4<f32>(e); }
fn from_v(v: V) -> Elem { return vec4<f16>(v); }
fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }

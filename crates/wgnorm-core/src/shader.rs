//! WGSL sources and how kernels are composed from them.
//!
//! WGSL has no `#include`: a kernel module is the concatenation of an I/O snippet (storage type
//! and vector width), the shared snippets it needs and the kernel body, all embedded at compile
//! time. Everything else is specialised with `override` constants at pipeline creation.
//!
//! A [`Kernel`] is a value, not a closed list: the engines here declare theirs, and each family
//! crate declares its own kernels from its own WGSL file plus the shared [`snippet`]s. A
//! [`Specialization`] (kernel, I/O type, override constants) names one pipeline; it is built only
//! from a kernel family's typed constants (e.g. [`crate::rownorm::RowConstants`]) so the runtime
//! and `cargo xtask validate --list` describe a pipeline with the same [`Specialization::key`].

use crate::context::Slot;
use crate::DType;

/// A file of the `wgnorm-shaders` package (the workspace's `shaders/` directory), by its path
/// there; an unknown path does not compile.
#[macro_export]
macro_rules! shader_file {
    // `tt`, not `literal`: a forwarded `literal` fragment is opaque and matches no string arm.
    ($path:tt) => {
        $crate::__shaders::wgsl!($path)
    };
}

/// The shared WGSL snippets kernels are composed from.
pub mod snippet {
    /// Welford / Chan moment merging on scalars.
    pub const MOMENTS: &str = shader_file!("common/moments.wgsl");
    /// A workgroup tree sum.
    pub const WG_SUM: &str = shader_file!("common/workgroup_sum.wgsl");
    /// Four workgroup tree sums at once (`wg_sum4`).
    pub const WG_SUM4: &str = shader_file!("common/workgroup_sum4.wgsl");
    /// Chunked Welford over four accesses.
    pub const CHUNK: &str = shader_file!("common/chunk.wgsl");
    /// The activation epilogues (`ACT`).
    pub const ACTIVATION: &str = shader_file!("common/activation.wgsl");
    /// Workgroup moment merging (Chan) in workgroup memory.
    pub const WG_MOMENTS: &str = shader_file!("common/workgroup_moments.wgsl");
    /// Subgroup team sums.
    pub const TEAM_SUM: &str = shader_file!("common/team.wgsl");
    /// The channel engine's view and uniform block (`ChannelParams`).
    pub const CHANNEL_COMMON: &str = shader_file!("channel_norm/common.wgsl");
}

const IO_F32_V1: &str = shader_file!("common/io_f32_v1.wgsl");
const IO_F32_V4: &str = shader_file!("common/io_f32_v4.wgsl");
const IO_F16_V1: &str = shader_file!("common/io_f16_v1.wgsl");
const IO_F16_V1_PACKED: &str = shader_file!("common/io_f16_v1_packed.wgsl");
const IO_F16_V4: &str = shader_file!("common/io_f16_v4.wgsl");
/// The f16 I/O snippet of [`F16Access::Vector`] (`to_v`/`from_v` on `vec4<f16>`), public so
/// tests can check its conversions exhaustively in a shader of their own (it opens with
/// `enable f16;`: compose it first).
pub const IO_F16_V4_VECTOR: &str = shader_file!("common/io_f16_v4_vector.wgsl");
const IO_BF16_V4: &str = shader_file!("common/io_bf16_v4.wgsl");
/// The lane helpers every four-element I/O snippet shares.
const IO_VEC4_HELPERS: &str = shader_file!("common/vec4.wgsl");
/// The f16 <-> f32 conversions of the packed f16 I/O snippet (`half_to_f32`, `f32_to_half` on
/// `vec4<u32>` bit patterns), public so tests can check them exhaustively in a shader of their own.
pub const HALF_CONVERSIONS_WGSL: &str = shader_file!("common/half.wgsl");

/// How f16 storage is read, converted and written, at either access width. Arithmetic stays f32
/// either way, with one rounding to f16 on store, and the two give the same bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum F16Access {
    /// Halves packed in u32 words, converted with integer and float arithmetic
    /// (`common/half.wgsl`, exact, ties to even): needs no device feature. Four-element
    /// accesses read and write two whole words; one-element accesses read a word's half and
    /// store it with two atomics that leave the other half alone (`common/io_f16_v1_packed.wgsl`).
    /// The faster choice on llvmpipe for four-element accesses, whose f16 vector loads cost
    /// more than the arithmetic (LayerNorm f16 0.15-0.23 of a same-bytes copy with vectors,
    /// 0.23-0.28 packed).
    #[default]
    Packed,
    /// `f16` / `vec4<f16>` elements converted by the device, one conversion per access: needs
    /// `SHADER_F16`. A GPU converts a half in one instruction where the packed path spends
    /// about a dozen. (A `bitcast<vec2<f16>>` of packed words would keep u32 bindings, but
    /// lavapipe returned wrong values for it, and naga cannot bitcast f16 pairs back.)
    Vector,
}

impl F16Access {
    /// The choice for a device: [`F16Access::Vector`] on a GPU with `SHADER_F16`, else
    /// [`F16Access::Packed`]. `WGNORM_F16_ACCESS=packed|vector` overrides it (to measure or
    /// test either path; `vector` still needs `SHADER_F16`).
    pub fn for_device(features: wgpu::Features, device_type: wgpu::DeviceType) -> F16Access {
        let forced = std::env::var("WGNORM_F16_ACCESS").ok();
        Self::choose(features, device_type, forced.as_deref())
    }

    /// [`F16Access::for_device`] with the override given (`None`: unset).
    fn choose(features: wgpu::Features, ty: wgpu::DeviceType, forced: Option<&str>) -> F16Access {
        let f16 = features.contains(wgpu::Features::SHADER_F16);
        match forced.map(str::to_ascii_lowercase).as_deref() {
            Some("packed") => F16Access::Packed,
            Some("vector") if f16 => F16Access::Vector,
            _ if f16 && ty != wgpu::DeviceType::Cpu => F16Access::Vector,
            _ => F16Access::Packed,
        }
    }
}

/// Which WGSL compiler a module is composed for. The kernels are one source; what differs is the
/// directives each compiler demands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Target {
    /// wgpu's native backends (Vulkan, Metal, DX12, GL), where naga compiles the WGSL: subgroup
    /// builtins need no directive, and naga 30 rejects `enable subgroups;`.
    #[default]
    Native,
    /// A browser's WebGPU (wgpu's `BrowserWebGpu` backend), where the browser compiles the WGSL
    /// (Tint in Chrome and Edge): modules that use subgroup builtins open with
    /// `enable subgroups;`, as the WGSL specification requires.
    Browser,
}

impl Target {
    /// The target of a device on `backend`.
    pub fn for_backend(backend: wgpu::Backend) -> Target {
        match backend {
            wgpu::Backend::BrowserWebGpu => Target::Browser,
            _ => Target::Native,
        }
    }
}

/// Storage type and access width of a kernel's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Io {
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
    /// Four consecutive elements per access (the reduced length must be a multiple of 4).
    pub vec4: bool,
}

impl Io {
    /// Scalar f32: the statistics and state kernels' access type.
    pub const F32: Io = Io {
        dtype: DType::F32,
        vec4: false,
    };

    /// Every storage type and access width.
    pub const ALL: [Io; 4] = [
        Io {
            dtype: DType::F32,
            vec4: false,
        },
        Io {
            dtype: DType::F32,
            vec4: true,
        },
        Io {
            dtype: DType::F16,
            vec4: false,
        },
        Io {
            dtype: DType::F16,
            vec4: true,
        },
    ];

    /// bf16, four elements per access (the only bf16 access).
    pub const BF16_V4: Io = Io {
        dtype: DType::BF16,
        vec4: true,
    };

    /// The row norms' access types: [`Io::ALL`] and [`Io::BF16_V4`].
    pub const ROWS: [Io; 5] = [Io::ALL[0], Io::ALL[1], Io::ALL[2], Io::ALL[3], Io::BF16_V4];

    /// Elements per access.
    pub fn width(self) -> u32 {
        if self.vec4 {
            4
        } else {
            1
        }
    }

    fn snippet(self, access: F16Access) -> &'static str {
        match (self.dtype, self.vec4) {
            (DType::F32, false) => IO_F32_V1,
            (DType::F32, true) => IO_F32_V4,
            (DType::F16, false) if access == F16Access::Vector => IO_F16_V1,
            (DType::F16, false) => IO_F16_V1_PACKED,
            (DType::F16, true) if access == F16Access::Vector => IO_F16_V4_VECTOR,
            (DType::F16, true) => IO_F16_V4,
            // bf16 has only the packed access; `Context::pipeline` refuses scalar bf16, so the
            // second arm is never compiled.
            (DType::BF16, _) => IO_BF16_V4,
        }
    }

    /// Byte alignment every binding offset needs for this access type.
    pub fn alignment(self) -> u64 {
        self.dtype.size() * self.width() as u64
    }

    /// `f32x4` and the like, for messages and keys.
    pub fn label(self) -> String {
        format!("{}x{}", self.dtype, self.width())
    }
}

/// A kernel: a WGSL body with one compute entry point `main`, the snippets it is composed with,
/// its bind-group layout (slot 0 the uniform block, then its storage bindings in order) and the
/// device features it needs beyond its I/O type's. Two kernels are the same kernel when their
/// names are equal: a name is unique in the workspace (it is the path of the body under
/// `shaders/` without `.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    name: &'static str,
    parts: &'static [&'static str],
    slots: &'static [Slot],
    features: wgpu::Features,
    /// The kernel handles bf16 storage (`with_bf16`).
    bf16: bool,
}

impl PartialEq for Kernel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Kernel {}
impl std::hash::Hash for Kernel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl Kernel {
    /// A kernel from its name, its WGSL parts in order (snippets first, the body last) and its
    /// binding layout.
    pub const fn new(
        name: &'static str,
        parts: &'static [&'static str],
        slots: &'static [Slot],
    ) -> Kernel {
        Kernel {
            name,
            parts,
            slots,
            features: wgpu::Features::empty(),
            bf16: false,
        }
    }

    /// The same kernel, declared to handle bf16 storage (its I/O through the snippet only).
    pub const fn with_bf16(self) -> Kernel {
        Kernel { bf16: true, ..self }
    }

    /// Whether the kernel handles bf16 storage.
    pub fn supports_bf16(&self) -> bool {
        self.bf16
    }

    /// The same kernel needing `features` (e.g. `SUBGROUP`) besides those of its I/O type.
    pub const fn with_features(self, features: wgpu::Features) -> Kernel {
        Kernel { features, ..self }
    }

    /// The kernel's name: its body's path under `shaders/` without `.wgsl`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The bind-group layout: slot 0 the uniform block, then one per storage binding.
    pub fn slots(&self) -> &'static [Slot] {
        self.slots
    }

    /// The WGSL parts in order (snippets first, the body last), before the I/O snippet and the
    /// element accessors are composed in.
    pub fn parts(&self) -> &'static [&'static str] {
        self.parts
    }

    /// Device features the module needs besides those its `Io` needs.
    pub fn required_features(&self) -> wgpu::Features {
        self.features
    }

    /// The complete WGSL module for this kernel with this I/O type (packed f16 access).
    pub fn source(&self, io: Io) -> String {
        self.source_with(io, F16Access::Packed)
    }

    /// The complete WGSL module with a choice of four-element f16 access, for naga.
    pub fn source_with(&self, io: Io, access: F16Access) -> String {
        self.source_for(io, access, Target::Native)
    }

    /// The complete WGSL module with a choice of f16 access, composed for `target`'s compiler.
    pub fn source_for(&self, io: Io, access: F16Access, target: Target) -> String {
        let mut s = String::new();
        if target == Target::Browser && self.features.contains(wgpu::Features::SUBGROUP) {
            s.push_str("enable subgroups;\n");
        }
        s.push_str(io.snippet(access));
        if io.vec4 {
            s.push('\n');
            s.push_str(IO_VEC4_HELPERS);
        }
        if io.dtype == DType::F16 && access == F16Access::Packed {
            s.push('\n');
            s.push_str(HALF_CONVERSIONS_WGSL);
        }
        let words = io.dtype == DType::F16 && !io.vec4 && access == F16Access::Packed;
        let mut body = String::new();
        for part in self.parts {
            body.push('\n');
            body.push_str(part);
        }
        let bindings = elem_bindings(&body);
        if words {
            body = declare_words(&body);
        }
        s.push_str(&body);
        s.push_str("\n// Element accessors, one pair per binding of the element type.\n");
        for b in &bindings {
            s.push_str(&b.accessors(words));
        }
        s
    }
}

/// A storage binding of the element type (`array<Elem>`) that a kernel declares: kernels reach
/// its elements only through the accessors the composer writes for it (`NAME_load(i)`,
/// `NAME_store(i, v)` when writable), so one body serves every storage type and access.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ElemBinding {
    name: String,
    writable: bool,
}

const READ_DECL: &str = "var<storage, read> ";
const WRITE_DECL: &str = "var<storage, read_write> ";
const ELEM_ARRAY: &str = ": array<Elem>;";

/// The access mode and name of a declaration line of an element-type binding.
fn elem_decl(line: &str) -> Option<ElemBinding> {
    let (writable, rest) = match (line.find(READ_DECL), line.find(WRITE_DECL)) {
        (Some(i), _) => (false, &line[i + READ_DECL.len()..]),
        (_, Some(i)) => (true, &line[i + WRITE_DECL.len()..]),
        _ => return None,
    };
    let name = rest.trim_end().strip_suffix(ELEM_ARRAY)?;
    Some(ElemBinding {
        name: name.trim().to_string(),
        writable,
    })
}

fn elem_bindings(body: &str) -> Vec<ElemBinding> {
    body.lines().filter_map(elem_decl).collect()
}

/// The body with its element-type bindings declared as u32 words (atomic when writable), for
/// the packed one-element f16 access.
fn declare_words(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 256);
    for line in body.lines() {
        match elem_decl(line) {
            Some(b) => {
                let word = if b.writable { "atomic<u32>" } else { "u32" };
                out.push_str(&line.replace(ELEM_ARRAY, &format!(": array<{word}>;")));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl ElemBinding {
    /// `NAME_load(i) -> V` (and `NAME_store(i, v)` when writable), `i` counting accesses.
    fn accessors(&self, words: bool) -> String {
        let n = &self.name;
        match (words, self.writable) {
            (false, false) => format!("fn {n}_load(i: u32) -> V {{ return to_v({n}[i]); }}\n"),
            (false, true) => format!(
                "fn {n}_load(i: u32) -> V {{ return to_v({n}[i]); }}\n\
                 fn {n}_store(i: u32, v: V) {{ {n}[i] = from_v(v); }}\n"
            ),
            (true, false) => format!(
                "fn {n}_load(i: u32) -> V {{ return half_in_word({n}[i >> 1u], i); }}\n"
            ),
            (true, true) => format!(
                "fn {n}_load(i: u32) -> V {{ return half_in_word(atomicLoad(&{n}[i >> 1u]), i); }}\n\
                 fn {n}_store(i: u32, v: V) {{\n    \
                     let s = (i & 1u) * 16u;\n    \
                     atomicAnd(&{n}[i >> 1u], ~(0xffffu << s));\n    \
                     atomicOr(&{n}[i >> 1u], half_bits(v) << s);\n\
                 }}\n"
            ),
        }
    }
}

/// Features a module needs: the kernel's own plus f16 element access (packed f16 words need no
/// feature; [`F16Access::Vector`] needs `SHADER_F16`).
pub fn required_features(kernel: Kernel, io: Io, access: F16Access) -> wgpu::Features {
    let mut f = kernel.required_features();
    if io.dtype == DType::F16 && access == F16Access::Vector {
        f |= wgpu::Features::SHADER_F16;
    }
    f
}

/// One pipeline: a kernel, its I/O type and its override constants. Built by a kernel family's
/// typed constants, never by hand at a call site.
#[derive(Clone, Debug, PartialEq)]
pub struct Specialization {
    /// The kernel.
    pub kernel: Kernel,
    /// Its I/O type.
    pub io: Io,
    /// Its override constants, in the order its typed constants wrote them.
    pub constants: Vec<(&'static str, f64)>,
}

impl Specialization {
    /// A specialisation with no constants yet; add them with [`Specialization::set`] and
    /// [`Specialization::flag`].
    pub fn new(kernel: Kernel, io: Io) -> Specialization {
        Specialization {
            kernel,
            io,
            constants: Vec::with_capacity(16),
        }
    }

    /// Sets override constant `name` to `value` (replacing an earlier value of it).
    pub fn set(mut self, name: &'static str, value: impl Into<f64>) -> Specialization {
        let value = value.into();
        match self.constants.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.constants.push((name, value)),
        }
        self
    }

    /// Sets a boolean override constant (`true` = 1).
    pub fn flag(self, name: &'static str, value: bool) -> Specialization {
        self.set(name, if value { 1.0 } else { 0.0 })
    }

    /// Sets several constants at once (an activation's three, say).
    pub fn with(mut self, constants: &[(&'static str, f64)]) -> Specialization {
        self.constants.extend_from_slice(constants);
        self
    }

    /// One line naming this pipeline: `kernel [io] NAME=value ...` with the constants sorted by
    /// name. `cargo xtask validate --list` prints these, and the runtime writes the same line for
    /// every pipeline it creates when `WGNORM_LOG_PIPELINES` names a file.
    pub fn key(&self) -> String {
        let mut c = self.constants.clone();
        c.sort_by(|a, b| a.0.cmp(b.0));
        let mut s = format!("{} [{}]", self.kernel.name(), self.io.label());
        for (k, v) in c {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::{DeviceType, Features};

    #[test]
    fn f16_access_vector_on_gpus_with_shader_f16_only() {
        let choose = F16Access::choose;
        let f16 = Features::SHADER_F16;
        let none = Features::empty();
        assert_eq!(
            choose(f16, DeviceType::DiscreteGpu, None),
            F16Access::Vector
        );
        assert_eq!(
            choose(f16, DeviceType::IntegratedGpu, None),
            F16Access::Vector
        );
        assert_eq!(choose(f16, DeviceType::Cpu, None), F16Access::Packed);
        assert_eq!(
            choose(none, DeviceType::DiscreteGpu, None),
            F16Access::Packed
        );
        // Overrides: `vector` cannot conjure the feature; `packed` always holds.
        assert_eq!(
            choose(f16, DeviceType::Cpu, Some("Vector")),
            F16Access::Vector
        );
        assert_eq!(
            choose(none, DeviceType::Cpu, Some("vector")),
            F16Access::Packed
        );
        assert_eq!(
            choose(f16, DeviceType::DiscreteGpu, Some("packed")),
            F16Access::Packed
        );
    }

    const BODY: &str = "@group(0) @binding(1) var<storage, read> x: array<Elem>;\n\
                        @group(0) @binding(2) var<storage, read_write> y: array<Elem>;\n";

    #[test]
    fn every_element_binding_gets_accessors_and_packed_f16_words_store_atomically() {
        let k = Kernel::new("t", &[BODY], &[]);
        let f32x4 = k.source(Io::ALL[1]);
        assert!(f32x4.contains("x: array<Elem>;"));
        assert!(f32x4.contains("fn x_load(i: u32) -> V { return to_v(x[i]); }"));
        assert!(f32x4.contains("fn y_store(i: u32, v: V) { y[i] = from_v(v); }"));
        assert!(!f32x4.contains("fn x_store"));
        let words = k.source_with(Io::ALL[2], F16Access::Packed);
        assert!(words.contains("x: array<u32>;") && words.contains("y: array<atomic<u32>>;"));
        assert!(words.contains("atomicAnd(&y[i >> 1u]") && words.contains("atomicOr(&y[i >> 1u]"));
        assert!(words.contains("fn f32_to_half") && !words.contains("enable f16"));
        let native = k.source_with(Io::ALL[2], F16Access::Vector);
        assert!(native.contains("enable f16;") && native.contains("y: array<Elem>;"));
    }

    #[test]
    fn browser_modules_enable_subgroups_where_the_kernel_uses_them() {
        let plain = Kernel::new("t", &[BODY], &[]);
        let sub = plain.with_features(Features::SUBGROUP);
        let browser = |k: Kernel| k.source_for(Io::F32, F16Access::Packed, Target::Browser);
        assert!(browser(sub).starts_with("enable subgroups;"));
        assert!(!browser(plain).contains("enable subgroups"));
        assert!(!sub.source(Io::F32).contains("enable subgroups"));
        assert_eq!(
            Target::for_backend(wgpu::Backend::BrowserWebGpu),
            Target::Browser
        );
        assert_eq!(Target::for_backend(wgpu::Backend::Vulkan), Target::Native);
    }

    #[test]
    fn f16_vector_modules_need_shader_f16_and_skip_the_arithmetic() {
        let k = Kernel::new("t", &["fn main() {}"], &[]);
        let io = Io {
            dtype: DType::F16,
            vec4: true,
        };
        assert!(required_features(k, io, F16Access::Vector).contains(Features::SHADER_F16));
        assert!(required_features(k, io, F16Access::Packed).is_empty());
        assert!(k
            .source_with(io, F16Access::Vector)
            .starts_with("// I/O snippet"));
        assert!(!k
            .source_with(io, F16Access::Vector)
            .contains("fn f32_to_half"));
        assert!(k
            .source_with(io, F16Access::Packed)
            .contains("fn f32_to_half"));
    }
}

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
const IO_F16_V4: &str = shader_file!("common/io_f16_v4.wgsl");
const IO_BF16_V4: &str = shader_file!("common/io_bf16_v4.wgsl");
/// The f16 <-> f32 conversions of the packed f16 I/O snippet (`half_to_f32`, `f32_to_half` on
/// `vec4<u32>` bit patterns), public so tests can check them exhaustively in a shader of their own.
pub const HALF_CONVERSIONS_WGSL: &str = shader_file!("common/half.wgsl");

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

    fn snippet(self) -> &'static str {
        match (self.dtype, self.vec4) {
            (DType::F32, false) => IO_F32_V1,
            (DType::F32, true) => IO_F32_V4,
            (DType::F16, false) => IO_F16_V1,
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

    /// Device features the module needs besides those its `Io` needs.
    pub fn required_features(&self) -> wgpu::Features {
        self.features
    }

    /// The complete WGSL module for this kernel with this I/O type.
    pub fn source(&self, io: Io) -> String {
        let mut s = String::from(io.snippet());
        if io.dtype == DType::F16 && io.vec4 {
            s.push('\n');
            s.push_str(HALF_CONVERSIONS_WGSL);
        }
        for part in self.parts {
            s.push('\n');
            s.push_str(part);
        }
        s
    }
}

/// Features a module needs: the kernel's own plus f16 element access (the vec4 f16 I/O packs
/// halves into u32 words and needs no feature).
pub fn required_features(kernel: Kernel, io: Io) -> wgpu::Features {
    let mut f = kernel.required_features();
    if io.dtype == DType::F16 && !io.vec4 {
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

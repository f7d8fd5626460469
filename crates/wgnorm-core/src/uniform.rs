//! Typed uniform blocks: every kernel's parameters are a `#[repr(C)]` Pod struct whose WGSL twin
//! (same struct name, same field names, same order) is read by the shader as
//! `@group(0) @binding(0) var<uniform> params: Name;`.
//!
//! Declare one with [`uniform_block!`](crate::uniform_block); the macro proves at compile time that
//! the struct has no padding and fits a bind group's parameter block, and records each field's
//! name, byte offset and size so a test can compare them with the WGSL struct that naga reads
//! (`tests/uniform_layout.rs`): reordering or renaming a field on one side fails that test instead
//! of silently corrupting a kernel.

/// Largest uniform block a kernel may use, in bytes.
pub const MAX_UNIFORM_BYTES: usize = 128;

/// One field of a uniform block: name, byte offset and byte size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// Its byte offset in the block.
    pub offset: usize,
    /// Its size in bytes.
    pub size: usize,
}

/// A kernel's parameter block. Implemented by [`uniform_block!`](crate::uniform_block) only.
pub trait UniformBlock: bytemuck::Pod + Send + Sync + 'static {
    /// The name of the WGSL struct this mirrors.
    const WGSL_NAME: &'static str;
    /// Fields in declaration order.
    fn fields() -> Vec<Field>;
}

/// The bytes of a block, zero-padded to [`MAX_UNIFORM_BYTES`] (the bind-group cache key).
pub(crate) fn key_words<P: UniformBlock>(p: &P) -> [u32; MAX_UNIFORM_BYTES / 4] {
    let mut words = [0u32; MAX_UNIFORM_BYTES / 4];
    let bytes: &[u8] = bytemuck::bytes_of(p);
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

#[doc(hidden)]
pub use bytemuck as __bytemuck;

/// Declares a uniform block: a `#[repr(C)]` struct of `u32`/`f32`/`i32` fields that mirrors the
/// WGSL struct of the same name.
///
/// ```
/// wgnorm_core::uniform_block! {
///     /// Parameters of a hypothetical kernel.
///     pub struct ExampleParams {
///         /// Elements.
///         pub n: u32,
///         pub eps: f32,
///         pub _pad0: u32,
///         pub _pad1: u32,
///     }
/// }
/// use wgnorm_core::uniform::UniformBlock;
/// assert_eq!(ExampleParams::fields()[1].offset, 4);
/// ```
#[macro_export]
macro_rules! uniform_block {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        #[allow(missing_docs)] // a field's meaning is documented on its WGSL twin
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty ),*
        }

        // No padding (so every byte is a field's), a multiple of 16 bytes (WGSL's uniform struct
        // rule) and at most MAX_UNIFORM_BYTES: proven here, at compile time.
        const _: () = {
            let fields = 0 $( + ::core::mem::size_of::<$ty>() )*;
            assert!(::core::mem::size_of::<$name>() == fields, "uniform block has padding");
            assert!(::core::mem::size_of::<$name>() % 16 == 0, "uniform block size must be a multiple of 16 bytes");
            assert!(::core::mem::size_of::<$name>() <= $crate::uniform::MAX_UNIFORM_BYTES, "uniform block too large");
            $( assert!(::core::mem::size_of::<$ty>() == 4, "uniform fields are 4-byte scalars"); )*
        };

        // SAFETY: repr(C), every field a 4-byte Pod scalar (u32/f32/i32, checked above by size and
        // by the bounds below), no padding (checked above).
        unsafe impl $crate::uniform::__bytemuck::Zeroable for $name {}
        unsafe impl $crate::uniform::__bytemuck::Pod for $name {}
        const _: fn() = || {
            fn pod<T: $crate::uniform::__bytemuck::Pod>() {}
            $( pod::<$ty>(); )*
        };

        impl $crate::uniform::UniformBlock for $name {
            const WGSL_NAME: &'static str = stringify!($name);
            fn fields() -> ::std::vec::Vec<$crate::uniform::Field> {
                ::std::vec![$(
                    $crate::uniform::Field {
                        name: stringify!($field),
                        offset: ::core::mem::offset_of!($name, $field),
                        size: ::core::mem::size_of::<$ty>(),
                    }
                ),*]
            }
        }
    };
}

uniform_block! {
    /// `ChannelParams` (`channel_norm/common.wgsl`): the channel-statistics engine's view of x as
    /// `[p, q, r, s]` and its per-call settings, shared by the moments, finalize, merge, apply and
    /// running-statistics kernels.
    pub struct ChannelParams {
        pub p: u32,
        pub q: u32,
        pub r: u32,
        /// S in accesses of the I/O vector width.
        pub s_v: u32,
        /// Channels per slot.
        pub cg: u32,
        /// Elements of s per channel.
        pub sdiv: u32,
        /// Tiles each slot's accesses are split into, and accesses per tile.
        pub tiles: u32,
        pub tile_len: u32,
        pub eps: f32,
        pub momentum: f32,
        /// 1: the momentum is 1 / num_batches_tracked (PyTorch `momentum=None`).
        pub cumulative: u32,
        /// Total accesses of x (apply pass).
        pub total_v: u32,
        /// Elements per p (`q * r * s`).
        pub per_p: u32,
        /// Mixing weight of the source (running) statistics, or the quadratic mean's warm-up
        /// factor.
        pub w_src: f32,
        /// Batch size B of a token mask `[B, T]`.
        pub mask_b: u32,
        /// Lp norms: the norm each slot is scaled to.
        pub norm_target: f32,
        /// SELU epilogue constants.
        pub selu_alpha: f32,
        pub selu_lambda: f32,
        /// x (and y) bound in windows: this dispatch's first workgroup (moments) or invocation
        /// (apply) in the whole call's numbering, and the access of the tensor its binding
        /// starts at. Every other index is the whole call's, so windows compute exactly what
        /// one unsplit dispatch would. 0 when x is bound whole. `group_end`: the end of the
        /// moments dispatch's workgroups (its 2D grid may round past them).
        pub group_base: u32,
        pub x_base: u32,
        pub group_end: u32,
        pub _pad1: u32,
        /// Moments pass: consecutive channels (slots r) whose moments a grouped finalize merges
        /// (channels-last GroupNorm reduced per channel): they share their group's shift, stored
        /// once per group. 1 otherwise.
        pub shift_cg: u32,
        pub _pad2: u32,
    }
}

uniform_block! {
    /// `RowParams` (`row_norm/common.wgsl`): LayerNorm / RMSNorm over `[rows, n]`.
    pub struct RowParams {
        pub rows: u32,
        /// Row length in accesses of the I/O vector width.
        pub n_vec: u32,
        /// Row length in elements.
        pub n: u32,
        /// Bit 0: write the row means; bit 1: write the row rstd.
        pub write_stats: u32,
        pub eps: f32,
        /// Added to the weight before it multiplies (Gemma's RMSNorm stores `weight - 1`).
        pub weight_offset: f32,
        /// SELU epilogue constants.
        pub selu_alpha: f32,
        pub selu_lambda: f32,
        /// Index of this window's first row in `mean_out` / `rstd_out`, which are bound whole
        /// (a window's statistics would otherwise need a 64-row-aligned start).
        pub stat_base: u32,
        /// Split kernel only: chunks per row, and accesses per chunk (the last may be shorter).
        pub chunks: u32,
        pub chunk_vec: u32,
        pub _pad0: u32,
    }
}

uniform_block! {
    /// `RowGradParams` (`row_grad/common.wgsl`): row-norm backward over `[rows, n]`.
    pub struct RowGradParams {
        pub rows: u32,
        /// Row length in accesses of the I/O vector width, and in elements.
        pub n_vec: u32,
        pub n: u32,
        pub eps: f32,
        /// Added to the weight before it multiplies (Gemma's RMSNorm).
        pub weight_offset: f32,
        /// Rows per block of the parameter-gradient pass, and the number of blocks.
        pub row_block: u32,
        pub blocks: u32,
        /// Tensors shaped like x bound in windows of whole blocks of rows: the first row of
        /// this dispatch's window (its bindings start there; `rows` is then the window's end).
        /// Row indices stay the whole call's. 0 when bound whole.
        pub row_base: u32,
        /// SELU's constants, when SELU is the differentiated activation.
        pub selu_alpha: f32,
        pub selu_lambda: f32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

uniform_block! {
    /// `ChannelGradParams` (`channel_grad/common.wgsl`): batch-statistics backward over the
    /// forward's `[p, q, r, s]` view.
    pub struct ChannelGradParams {
        pub p: u32,
        pub q: u32,
        pub r: u32,
        pub s: u32,
        /// Channels per slot, and elements of s per channel.
        pub cg: u32,
        pub sdiv: u32,
        /// Tiles of each (p, channel)'s `q * sdiv` elements, and elements per tile.
        pub tiles: u32,
        pub tile_len: u32,
        pub eps: f32,
        /// Elements of x (dx pass: the end of this dispatch's window).
        pub total: u32,
        /// x, dy and dx bound in windows: this dispatch's first workgroup (partials) or
        /// invocation (dx) in the whole call's numbering, the element its bindings start at,
        /// and the end of its workgroups (partials; its 2D grid may round past them). Every
        /// other index is the whole call's. 0, 0, `u32::MAX` when bound whole.
        pub group_base: u32,
        pub x_base: u32,
        pub group_end: u32,
        /// SELU's constants, when SELU is the differentiated activation.
        pub selu_alpha: f32,
        pub selu_lambda: f32,
        /// L1/L2 denominators: the norm the forward scaled each slot to (`y = target x / norm`;
        /// 1 for a plain Lp normalization).
        pub norm_target: f32,
        /// A gradient term's two integer parameters (`TermArgs::params`).
        pub term_a: u32,
        pub term_b: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

uniform_block! {
    /// `EwParams` (`elementwise.wgsl`): a standalone activation over `n_v` accesses.
    pub struct EwParams {
        pub n_v: u32,
        /// SELU constants.
        pub selu_alpha: f32,
        pub selu_lambda: f32,
        pub _pad0: u32,
    }
}

uniform_block! {
    /// `CopyParams` (`copy.wgsl`): the bandwidth roofline's copy of `n_vec` accesses.
    pub struct CopyParams {
        pub n_vec: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

uniform_block! {
    /// `BlendParams` (`blend.wgsl`): `y = wa a + wb b` over `n_v` accesses.
    pub struct BlendParams {
        pub n_v: u32,
        /// The weight of a.
        pub wa: f32,
        /// The weight of b.
        pub wb: f32,
        pub _pad0: u32,
    }
}

uniform_block! {
    /// `NaiveParams` (`naive/channel_norm.wgsl`): the batch family's naive baseline.
    pub struct NaiveParams {
        /// Planes (N * C), elements per plane (H * W), channels.
        pub planes: u32,
        pub hw: u32,
        pub c: u32,
        /// Element strides between positions of a plane and between channels.
        pub stride_s: u32,
        pub stride_c: u32,
        /// Statistic slots and planes per slot.
        pub slots: u32,
        pub per_slot: u32,
        pub slot_div: u32,
        pub cpg: u32,
        pub kstride: u32,
        pub slot_n: u32,
        pub eps: f32,
        /// SELU epilogue constants.
        pub selu_alpha: f32,
        pub selu_lambda: f32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

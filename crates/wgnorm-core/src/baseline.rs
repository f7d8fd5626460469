//! The benchmarks' reference kernels: the copy kernels that set the bandwidth roofline, and the
//! naive batch-statistics baseline (one invocation per plane, slot or element). The row-norm
//! baseline is [`crate::rownorm::naive_spec`].

use crate::context::Slot;
use crate::shader::{snippet, Io, Kernel, Specialization};
use crate::{Activation, DType};

const COPY_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];

/// Plain copy, the bandwidth roofline of the benchmarks.
pub const COPY_KERNEL: Kernel =
    Kernel::new("copy", &[crate::shader_file!("copy.wgsl")], COPY_SLOTS);

/// Bind-group slots of the naive batch-statistics baseline.
pub const NAIVE_CHANNEL_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // x
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::ReadWrite, // y
    Slot::ReadWrite, // plane statistics
    Slot::ReadWrite, // slot statistics
];

/// One invocation per plane, slot or element, in stages.
pub const NAIVE_CHANNEL_KERNEL: Kernel = Kernel::new(
    "naive/channel_norm",
    &[
        snippet::ACTIVATION,
        crate::shader_file!("naive/channel_norm.wgsl"),
    ],
    NAIVE_CHANNEL_SLOTS,
);

/// The copy kernels: `wg` lanes, `block` vector accesses per lane.
pub fn copy_spec(io: Io, wg: u32, block: u32) -> Specialization {
    Specialization::new(COPY_KERNEL, io)
        .set("WG", wg)
        .set("BLOCK", block)
}

/// Stage `stage` (0: plane moments, 1: slot merge, 2: normalize) of the naive baseline.
pub fn naive_channel_spec(stage: u32, act: Activation) -> Specialization {
    Specialization::new(NAIVE_CHANNEL_KERNEL, Io::F32)
        .set("WG", 64)
        .set("STAGE", stage)
        .with(&act.constants())
}

/// The copy shapes the benchmarks time: (label, lanes, vector accesses per lane).
pub const COPY_SHAPES: [(&str, u32, u32); 3] = [
    ("copy vec4/lane", 256, 1),
    ("copy 256 vec4/lane", 8, 256),
    ("copy 64 vec4/lane", 64, 64),
];

/// Every baseline pipeline, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for io in Io::ALL {
        for (_, wg, block) in COPY_SHAPES {
            out.push(copy_spec(io, wg, block));
        }
    }
    for dtype in [DType::F32, DType::F16] {
        for mode in [
            crate::rownorm::RowMode::LayerNorm,
            crate::rownorm::RowMode::RmsNorm,
        ] {
            for bias in [false, true] {
                out.push(crate::rownorm::naive_spec(
                    mode,
                    bias,
                    Io { dtype, vec4: false },
                ));
            }
        }
    }
    for stage in 0..3 {
        for act in [Activation::None, Activation::Silu] {
            out.push(naive_channel_spec(stage, act));
        }
    }
    out
}

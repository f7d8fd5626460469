//! Every uniform block's Rust struct against its WGSL twin, as naga lays the WGSL out: the same
//! fields in the same order with the same byte offsets and sizes, the same total size, and the
//! kernel's `params` uniform really of that type. Reordering, renaming, adding or dropping a field
//! on either side fails here (instead of silently feeding a kernel the wrong values).

use naga::proc::GlobalCtx;
use wgnorm::engine::shader::{Io, Kernel};
use wgnorm::engine::uniform::{Field, UniformBlock};
use wgnorm::DType;

/// The `(name, offset, size)` of each member of the WGSL struct `name` in `kernel`'s module, and
/// the struct's size; also checks that the module's uniform binding is of that struct type.
fn wgsl_layout(kernel: Kernel, name: &str) -> (Vec<Field>, usize) {
    let io = Io {
        dtype: DType::F32,
        vec4: false,
    };
    let source = kernel.source(io);
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(&source)));
    let gctx: GlobalCtx = module.to_ctx();
    let (handle, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{}: no WGSL struct named {name}", kernel.name()));
    let uniform_types: Vec<_> = module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == naga::AddressSpace::Uniform)
        .map(|(_, g)| g.ty)
        .collect();
    assert_eq!(
        uniform_types,
        vec![handle],
        "{}: its uniform binding is not a {name}",
        kernel.name()
    );
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{name} is not a struct");
    };
    let fields = members
        .iter()
        .map(|m| Field {
            name: leak(m.name.clone().unwrap_or_default()),
            offset: m.offset as usize,
            size: module.types[m.ty].inner.size(gctx) as usize,
        })
        .collect();
    (fields, *span as usize)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn check<P: UniformBlock>(kernel: Kernel) {
    let (wgsl, span) = wgsl_layout(kernel, P::WGSL_NAME);
    assert_eq!(
        P::fields(),
        wgsl,
        "Rust {} and its WGSL twin in {} differ (left: Rust, right: WGSL)",
        P::WGSL_NAME,
        kernel.name()
    );
    assert_eq!(
        std::mem::size_of::<P>(),
        span,
        "{}: Rust size vs WGSL size",
        P::WGSL_NAME
    );
}

macro_rules! layout_tests {
    ($($test:ident: $block:ty => $kernel:expr;)*) => {
        $(
            #[test]
            fn $test() {
                check::<$block>($kernel);
            }
        )*
    };
}

layout_tests! {
    channel_params_matches_channel_norm_common: wgnorm::engine::uniform::ChannelParams => wgnorm::engine::chnorm::plan::APPLY_KERNEL;
    channel_params_matches_moments: wgnorm::engine::uniform::ChannelParams => wgnorm::engine::chnorm::plan::MOMENTS_KERNEL;
    channel_params_matches_finalize: wgnorm::engine::uniform::ChannelParams => wgnorm::engine::chnorm::plan::FINALIZE_KERNEL;
    channel_params_matches_merge: wgnorm::engine::uniform::ChannelParams => wgnorm::engine::chnorm::plan::MERGE_KERNEL;
    channel_params_matches_instance_running: wgnorm::engine::uniform::ChannelParams => wgnorm::engine::chnorm::plan::RUNNING_KERNEL;
    row_params_matches_team: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::TEAM_KERNEL;
    row_params_matches_team_regs: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::TEAM_REGS_KERNEL;
    row_params_matches_workgroup: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::WORKGROUP_KERNEL;
    row_params_matches_split_partials: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::SPLIT_PARTIALS_KERNEL;
    row_params_matches_split_apply: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::SPLIT_APPLY_KERNEL;
    row_params_matches_split_stats: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::SPLIT_STATS_KERNEL;
    row_params_matches_naive_row_norm: wgnorm::engine::uniform::RowParams => wgnorm::engine::rownorm::NAIVE_KERNEL;
    row_grad_params_matches_dx: wgnorm::engine::uniform::RowGradParams => wgnorm::engine::rowgrad::DX_KERNEL;
    row_grad_params_matches_params: wgnorm::engine::uniform::RowGradParams => wgnorm::engine::rowgrad::PARAMS_KERNEL;
    row_grad_params_matches_reduce: wgnorm::engine::uniform::RowGradParams => wgnorm::engine::rowgrad::REDUCE_KERNEL;
    row_grad_params_matches_saved: wgnorm::engine::uniform::RowGradParams => wgnorm::engine::rowgrad::SAVED_KERNEL;
    row_grad_params_matches_naive_row_grad: wgnorm::engine::uniform::RowGradParams => wgnorm::engine::rowgrad::NAIVE_DX_KERNEL;
    channel_grad_params_matches_partials: wgnorm::engine::uniform::ChannelGradParams => wgnorm::engine::chgrad::PARTIALS_KERNEL;
    channel_grad_params_matches_finalize: wgnorm::engine::uniform::ChannelGradParams => wgnorm::engine::chgrad::FINALIZE_KERNEL;
    channel_grad_params_matches_dx: wgnorm::engine::uniform::ChannelGradParams => wgnorm::engine::chgrad::DX_KERNEL;
    power_grad_params_matches_partials: wgnorm::powernorm::PowerGradParams => wgnorm::powernorm::GRAD_PARTIALS_KERNEL;
    power_grad_params_matches_finalize: wgnorm::powernorm::PowerGradParams => wgnorm::powernorm::GRAD_FINALIZE_KERNEL;
    power_grad_params_matches_dx: wgnorm::powernorm::PowerGradParams => wgnorm::powernorm::GRAD_DX_KERNEL;
    qk_rope_params_matches_qk_rope: wgnorm::rmsnorm::qk_rope::QkRopeParams => wgnorm::rmsnorm::qk_rope::QK_ROPE_KERNEL;
    ew_params_matches_elementwise: wgnorm::engine::uniform::EwParams => wgnorm::engine::elementwise::ELEMENTWISE_KERNEL;
    copy_params_matches_copy: wgnorm::engine::uniform::CopyParams => wgnorm::engine::core::baseline::COPY_KERNEL;
    blend_params_matches_blend: wgnorm::engine::uniform::BlendParams => wgnorm::engine::elementwise::BLEND_KERNEL;
    drop_params_matches_dropout: wgnorm::selfnorm::DropParams => wgnorm::selfnorm::DROPOUT_KERNEL;
    naive_params_matches_naive_channel_norm: wgnorm::engine::uniform::NaiveParams => wgnorm::engine::core::baseline::NAIVE_CHANNEL_KERNEL;
    naive_ball_params_matches_naive_midpoint: wgnorm::poincare::NaiveBallParams => wgnorm::poincare::NAIVE_MIDPOINT_KERNEL;
    ibn_params_matches_ibn: wgnorm::batchnorm::IbnParams => wgnorm::batchnorm::IBN_KERNEL;
    evo_b0_params_matches_evonorm_b0: wgnorm::batchnorm::EvoB0Params => wgnorm::batchnorm::EVONORM_B0_KERNEL;
    unmix_params_matches_unmix_tns: wgnorm::batchnorm::UnmixParams => wgnorm::batchnorm::UNMIX_TNS_KERNEL;
    adab2n_params_matches_adab2n: wgnorm::batchnorm::AdaB2nParams => wgnorm::batchnorm::ADAB2N_KERNEL;
    unified_params_matches_unified: wgnorm::powernorm::UnifiedParams => wgnorm::powernorm::UNIFIED_KERNEL;
    region_params_matches_region: wgnorm::batchnorm::RegionParams => wgnorm::batchnorm::REGION_KERNEL;
    fold_params_matches_fold: wgnorm::batchnorm::FoldParams => wgnorm::batchnorm::FOLD_KERNEL;
    ball_params_matches_ball: wgnorm::poincare::BallParams => wgnorm::poincare::BALL_KERNEL;
    ball_params_matches_midpoint: wgnorm::poincare::BallParams => wgnorm::poincare::MIDPOINT_KERNEL;
    ball_params_matches_midpoint_grad: wgnorm::poincare::BallParams => wgnorm::poincare::MIDPOINT_GRAD_KERNEL;
    evo_b0_grad_params_matches_evonorm_b0_grad: wgnorm::batchnorm::EvoB0GradParams => wgnorm::batchnorm::EVONORM_B0_GRAD_KERNEL;
    unified_grad_params_matches_unified_grad_finalize: wgnorm::powernorm::UnifiedGradParams => wgnorm::powernorm::UNIFIED_GRAD_FINALIZE_KERNEL;
}

/// The check itself can fail: a block whose fields are the right ones in another order.
#[test]
fn a_reordered_block_is_caught() {
    wgnorm::engine::core::uniform_block! {
        /// `EwParams` with its padding first.
        pub struct EwParams {
            pub _pad0: u32,
            pub n_v: u32,
            pub _pad1: u32,
            pub _pad2: u32,
        }
    }
    let caught = std::panic::catch_unwind(|| {
        check::<EwParams>(wgnorm::engine::elementwise::ELEMENTWISE_KERNEL)
    });
    assert!(
        caught.is_err(),
        "a reordered EwParams passed the layout check"
    );
}

/// Every kernel's layout fits WebGPU's default `max_storage_buffers_per_shader_stage` (8), so
/// every op runs on a device made with `wgpu::Limits::default()`.
#[test]
fn every_kernel_binds_at_most_webgpus_default_storage_buffers() {
    use wgnorm::engine::binding::MAX_STORAGE;
    use wgnorm::engine::Slot;
    let limit = wgnorm::wgpu::Limits::default().max_storage_buffers_per_shader_stage as usize;
    assert_eq!(MAX_STORAGE, limit);
    let mut seen = std::collections::BTreeSet::new();
    for spec in wgnorm::specializations() {
        if seen.insert(spec.kernel.name()) {
            let n = Slot::storage_count(spec.kernel.slots());
            assert!(
                n <= MAX_STORAGE,
                "{} binds {n} storage buffers",
                spec.kernel.name()
            );
        }
    }
    assert!(seen.len() > 40, "only {} kernels listed", seen.len());
}

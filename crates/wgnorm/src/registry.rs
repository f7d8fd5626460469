//! Every public op in one list: its type (exported at the facade's root: an entry for a type
//! that is not does not compile), its family crate, the conformance signatures it runs with
//! their runners, and whether `cargo xtask fuzz` calls it. The conformance runner's table is
//! this list's signatures; `tests/registry.rs` fails when a family crate has a public op that
//! is not here, when a signature of `tests/conformance/FORMAT.md` has no entry, or when an
//! entry that says it is fuzzed is not.

use crate::conformance::batch::*;
use crate::conformance::grads::*;
use crate::conformance::research::*;
use crate::conformance::rows::*;
use crate::conformance::RunFn;

/// One public op.
#[derive(Clone, Copy, Debug)]
pub struct OpEntry {
    /// The op's type name (`wgnorm::<name>`).
    pub name: &'static str,
    /// Its family crate.
    pub family: &'static str,
    /// Conformance signatures (forward and backward) this op runs, with their runners.
    pub cases: &'static [(&'static str, RunFn)],
    /// `Ok`: `cargo xtask fuzz` calls it; `Err(why not)`: its own tests cover it instead.
    pub fuzzed: Result<(), &'static str>,
}

/// An entry; `$ty` must be exported at the facade's root.
macro_rules! op {
    ($ty:ident, $family:literal, [$($sig:literal => $run:ident),* $(,)?], $fuzzed:expr) => {
        OpEntry {
            name: {
                // Names the type at the root: an op missing from the facade does not compile.
                let _exported = core::marker::PhantomData::<crate::$ty>;
                stringify!($ty)
            },
            family: $family,
            cases: &[$(($sig, $run as RunFn)),*],
            fuzzed: $fuzzed,
        }
    };
}

const FUZZED: Result<(), &str> = Ok(());

/// Every public op.
pub const OPS: &[OpEntry] = &[
    op!(LayerNorm, "wgnorm-layernorm", [
        "layer_norm" => run_layer_norm,
        "add_layer_norm" => run_add_layer_norm,
        "layer_norm_grad" => run_layer_norm_grad,
        "add_layer_norm_grad" => run_add_layer_norm_grad,
    ], FUZZED),
    op!(RmsNorm, "wgnorm-rmsnorm", [
        "rms_norm" => run_rms_norm,
        "add_rms_norm" => run_add_rms_norm,
        "rms_norm_grad" => run_rms_norm_grad,
        "add_rms_norm_grad" => run_add_rms_norm_grad,
    ], FUZZED),
    op!(QkNormRope, "wgnorm-rmsnorm", [
        "qk_norm_rope" => run_qk_norm_rope,
        "qk_norm_rope_grad" => run_qk_norm_rope_grad,
    ], FUZZED),
    op!(BatchNorm, "wgnorm-batchnorm", [
        "batch_norm" => run_batch_norm,
        "batch_norm_grad" => run_batch_norm_grad,
        "adab2n" => run_adab2n,
    ], FUZZED),
    op!(GhostBatchNorm, "wgnorm-batchnorm", [
        "ghost_batch_norm" => run_ghost_batch_norm,
        "ghost_batch_norm_grad" => run_ghost_batch_norm_grad,
    ], FUZZED),
    op!(RepBatchNorm, "wgnorm-batchnorm", [
        "rep_batch_norm" => run_rep_batch_norm,
        "rep_batch_norm_grad" => run_rep_batch_norm_grad,
    ], FUZZED),
    op!(EstBn, "wgnorm-batchnorm", ["estbn" => run_estbn], FUZZED),
    op!(AdaptiveBn, "wgnorm-batchnorm", ["adaptive_bn" => run_adaptive_bn], FUZZED),
    op!(TestTimeBn, "wgnorm-batchnorm", ["test_time_bn" => run_test_time_bn], FUZZED),
    op!(AdaB2nTaskWeighted, "wgnorm-batchnorm", [],
        Err("the task-weighted statistics take per-task batches the fuzzer does not draw; tests/instance_stats.rs")),
    op!(BatchChannelNorm, "wgnorm-batchnorm", [
        "batch_channel_norm" => run_batch_channel_norm,
        "batch_channel_norm_grad" => run_batch_channel_norm_grad,
    ], FUZZED),
    op!(EvoNormB0, "wgnorm-batchnorm", [
        "evonorm_b0" => run_evonorm_b0,
        "evonorm_b0_grad" => run_evonorm_b0_grad,
    ], FUZZED),
    op!(IbnNorm, "wgnorm-batchnorm", [
        "ibn_norm" => run_ibn_norm,
        "ibn_norm_grad" => run_ibn_norm_grad,
    ], FUZZED),
    op!(ProgressiveRepNorm, "wgnorm-batchnorm", [],
        Err("a schedule over training steps; tests/instance_stats.rs checks every phase")),
    op!(RegionNormB, "wgnorm-batchnorm", [
        "region_norm_b" => run_region_norm_b,
        "region_norm_b_grad" => run_region_norm_b_grad,
    ], FUZZED),
    op!(RegionNormL, "wgnorm-batchnorm", ["region_norm_l" => run_region_norm_l],
        Err("the learned mask's threshold makes random inputs flip pixels; conformance and tests/instance_stats.rs")),
    op!(UnmixTns, "wgnorm-batchnorm", ["unmix_tns" => run_unmix_tns], FUZZED),
    op!(GroupNorm, "wgnorm-groupnorm", [
        "group_norm" => run_group_norm,
        "group_norm_grad" => run_group_norm_grad,
    ], FUZZED),
    op!(InstanceNorm, "wgnorm-groupnorm", [
        "instance_norm" => run_instance_norm,
        "instance_norm_grad" => run_instance_norm_grad,
    ], FUZZED),
    op!(LpNorm, "wgnorm-groupnorm", [
        "lp_norm" => run_lp_norm,
        "lp_norm_grad" => run_lp_norm_grad,
    ], FUZZED),
    op!(MeanVarianceNorm, "wgnorm-groupnorm", [
        "mean_variance_norm" => run_mean_variance_norm,
        "mean_variance_norm_grad" => run_mean_variance_norm_grad,
    ], FUZZED),
    op!(WeightStandardization, "wgnorm-groupnorm", [
        "weight_standardization" => run_weight_standardization,
    ], FUZZED),
    op!(EvoNormS0, "wgnorm-groupnorm", [
        "evonorm_s0" => run_evonorm_s0,
        "evonorm_s0_grad" => run_evonorm_s0_grad,
    ], FUZZED),
    op!(PowerNorm, "wgnorm-powernorm", ["power_norm" => run_power_norm], FUZZED),
    op!(SinkhornNormalize, "wgnorm-powernorm", [
        "sinkhorn_normalize" => run_sinkhorn_normalize,
        "sinkhorn_normalize_grad" => run_sinkhorn_normalize_grad,
    ], FUZZED),
    op!(UnifiedNorm, "wgnorm-powernorm", ["unified_norm" => run_unified_norm], FUZZED),
    op!(PoincareMidpoint, "wgnorm-poincare", [
        "poincare_midpoint" => run_poincare_midpoint,
        "poincare_midpoint_grad" => run_poincare_midpoint_grad,
    ], FUZZED),
    op!(PoincareBatchNorm, "wgnorm-poincare", [
        "poincare_batch_norm" => run_poincare_batch_norm,
        "poincare_batch_norm_grad" => run_poincare_batch_norm_grad,
    ], FUZZED),
    op!(BallOps, "wgnorm-poincare", [],
        Err("the ball maps are checked against their f64 forms and each other in tests/poincare.rs")),
    op!(AlphaDropout, "wgnorm-selfnorm", [], FUZZED),
    op!(Elementwise, "wgnorm-core", [
        "selu" => run_selu,
        "selu_grad" => run_selu_grad,
    ], FUZZED),
];

/// The runner of a conformance signature.
pub fn runner(signature: &str) -> Option<RunFn> {
    signatures().find(|(n, _)| *n == signature).map(|(_, f)| f)
}

/// Every conformance signature with its runner, in the list's order.
pub fn signatures() -> impl Iterator<Item = (&'static str, RunFn)> {
    OPS.iter().flat_map(|e| e.cases.iter().copied())
}

//! The backward's extension point, [`GradTerm`]: a method's own WGSL composed into the engine's
//! three passes, as the forward's [`Epilogue`](crate::chnorm::Epilogue) is into its apply pass.

use super::{COMMON, DX_SLOTS, FINALIZE_SLOTS, PARTIALS_SLOTS, STATS};
use crate::shader::Kernel;
use crate::Tensor;

/// The partials pass's body, composed after a term's partials snippet.
pub const PARTIALS_BODY: &str = crate::shader_file!("channel_grad/partials.wgsl");
/// The finalize pass's body: per-slot dx coefficients, per-channel parameter gradients and
/// (role 2) a gradient term's own gradient. Composed after a term's finalize snippet.
pub const FINALIZE_BODY: &str = crate::shader_file!("channel_grad/finalize.wgsl");
/// The dx pass's body (elementwise), composed after a term's dx snippet.
pub const DX_BODY: &str = crate::shader_file!("channel_grad/dx.wgsl");
/// The snippets every partials kernel starts with: `[ACTIVATION, COMMON, STATS]`, then
/// `WG_SUM4`, the term's snippet, then [`PARTIALS_BODY`].
pub const PARTIALS_HEAD: [&str; 3] = [crate::shader::snippet::ACTIVATION, COMMON, STATS];
/// The snippets every finalize kernel starts with (as the partials').
pub const FINALIZE_HEAD: [&str; 3] = PARTIALS_HEAD;
/// The snippets every dx kernel starts with: `[ACTIVATION, COMMON]`, then the term's snippet,
/// then [`DX_BODY`].
pub const DX_HEAD: [&str; 2] = [crate::shader::snippet::ACTIVATION, COMMON];
/// The identity of every hook: the engine's own backward.
const TERM_NONE: &str = crate::shader_file!("channel_grad/term_none.wgsl");

/// How many f32 values a term's input or gradient holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TermLen {
    /// None: no tensor.
    None,
    /// One value.
    Scalar,
    /// One per channel of the view.
    PerChannel,
}

impl TermLen {
    /// Values for a view with `channels` channels.
    pub fn of(self, channels: usize) -> usize {
        match self {
            TermLen::None => 0,
            TermLen::Scalar => 1,
            TermLen::PerChannel => channels,
        }
    }
}

/// A method's part of the backward, the mirror of the forward's epilogue: the engine keeps the
/// statistics, windows, tiles and fixed-order sums; the term's snippets say what differs.
///
/// - **dx** snippet (every term): `term_dx(x, dy, ch) -> f32` is added to each element's dx (a
///   scaled residual's `alpha * dy`); with [`GradTerm::replacing_g`], `term_g(x, dy, w, ch) ->
///   f32` replaces `g = dz * w` in `dx = rstd (g - c1 - xhat c2)` (a numerator other than
///   `x - mean`).
/// - **partials** snippet ([`GradTerm::with_partials`]): `term_partial(x, dy, st, w, ch) ->
///   vec4<f32>` replaces the sums `(dz, dz * xhat, xhat, 0)` per (sample, channel, tile); the
///   finalize pass reads `.x` as `sum g / w` (c1, dbias) and `.y` as `sum g xhat / w` (c2,
///   dweight), `.z` as the centring correction, and `.w` is the term's own. It reads the term
///   input with `term_input_at(ch)` (bound in the bias's place: no activation with it).
/// - **finalize** snippet: `term_grad(item)`, one invocation per element of the term's
///   gradient ([`TermArgs::grad`], bound as `dweight`), from `partials`, `weight` and
///   `slot_stats`; with [`GradTerm::mixing_slots`], `term_slot_sums(p, r) -> vec4<f32>` gives
///   each slot's `(sum g, sum g xhat', sum xhat', count)` for its dx coefficients (the engine's
///   own is `slot_sums(p, r)`): a slot may sum other slots' partials (statistics over the batch
///   for some channels of a per-sample view), or none (statistics taken as constants).
///
/// Every snippet defines every hook its kernel's body calls (`shaders/channel_grad/term_none.wgsl`
/// lists them). What a term assumes of the view the method checks before it records. Two terms
/// are the same when their kernels and flags are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GradTerm {
    /// The partials kernel: parts `[PARTIALS_HEAD.., WG_SUM4, <snippet>, PARTIALS_BODY]`.
    pub partials: Kernel,
    /// The finalize kernel: parts `[FINALIZE_HEAD.., <snippet>, FINALIZE_BODY]`.
    pub finalize: Kernel,
    /// The dx kernel: parts `[DX_HEAD.., <snippet>, DX_BODY]`.
    pub dx: Kernel,
    /// The term's input (read by its snippets as `term_input`/`term_input_at`).
    pub input: TermLen,
    /// The term's gradient output.
    pub grad: TermLen,
    /// Its partials snippet replaces the engine's sums.
    pub own_partials: bool,
    /// Its `term_g` replaces `g = dz * w`.
    pub own_g: bool,
    /// The forward centred x (`c1 = mean(g)` is subtracted from g).
    pub centred: bool,
    /// Its `term_slot_sums` gives each slot's sums for the dx coefficients.
    pub own_slot_sums: bool,
}

/// Kernel names and parts, as a term's constructor takes them.
pub type Parts = (&'static str, &'static [&'static str]);

impl GradTerm {
    /// No term: the engine's own backward.
    pub const NONE: GradTerm = GradTerm::new(
        (
            "channel_grad/dx",
            &[DX_HEAD[0], DX_HEAD[1], TERM_NONE, DX_BODY],
        ),
        (
            "channel_grad/finalize",
            &[
                FINALIZE_HEAD[0],
                FINALIZE_HEAD[1],
                FINALIZE_HEAD[2],
                TERM_NONE,
                FINALIZE_BODY,
            ],
        ),
        (TermLen::None, TermLen::None),
    );

    /// A term from its dx and finalize kernels' names and parts and its `(input, gradient)`
    /// sizes; the engine's partials.
    pub const fn new(dx: Parts, finalize: Parts, lens: (TermLen, TermLen)) -> GradTerm {
        GradTerm {
            partials: Kernel::new(
                "channel_grad/partials",
                &[
                    PARTIALS_HEAD[0],
                    PARTIALS_HEAD[1],
                    PARTIALS_HEAD[2],
                    crate::shader::snippet::WG_SUM4,
                    TERM_NONE,
                    PARTIALS_BODY,
                ],
                PARTIALS_SLOTS,
            ),
            finalize: Kernel::new(finalize.0, finalize.1, FINALIZE_SLOTS),
            dx: Kernel::new(dx.0, dx.1, DX_SLOTS),
            input: lens.0,
            grad: lens.1,
            own_partials: false,
            own_g: false,
            centred: true,
            own_slot_sums: false,
        }
    }

    /// The same term with another finalize kernel (parts `[FINALIZE_HEAD.., <snippet>,
    /// FINALIZE_BODY]`): `GradTerm::NONE.with_finalize(..)` for a term that only mixes slots.
    pub const fn with_finalize(self, finalize: Parts) -> GradTerm {
        GradTerm {
            finalize: Kernel::new(finalize.0, finalize.1, FINALIZE_SLOTS),
            ..self
        }
    }

    /// The same term with its own partials sums.
    pub const fn with_partials(self, partials: Parts) -> GradTerm {
        GradTerm {
            partials: Kernel::new(partials.0, partials.1, PARTIALS_SLOTS),
            own_partials: true,
            ..self
        }
    }

    /// The same term with its own `g` (`term_g`).
    pub const fn replacing_g(self) -> GradTerm {
        GradTerm {
            own_g: true,
            ..self
        }
    }

    /// The same term with its own slot sums (`term_slot_sums`).
    pub const fn mixing_slots(self) -> GradTerm {
        GradTerm {
            own_slot_sums: true,
            ..self
        }
    }

    /// The same term for a forward that does not centre x (`c1 = 0`).
    pub const fn not_centred(self) -> GradTerm {
        GradTerm {
            centred: false,
            ..self
        }
    }
}

impl Default for GradTerm {
    fn default() -> Self {
        GradTerm::NONE
    }
}

/// A gradient term of one call: the term, its input and where its gradient goes.
#[derive(Clone, Copy, Debug)]
pub struct TermArgs<'a> {
    /// The term's kernels.
    pub term: GradTerm,
    /// Its input (f32, [`GradTerm::input`] values).
    pub input: Option<&'a Tensor>,
    /// Output: its parameter gradient (f32, [`GradTerm::grad`] values), when wanted.
    pub grad: Option<&'a Tensor>,
    /// Two integers its snippets read as `params.term_a`, `params.term_b`.
    pub params: [u32; 2],
}

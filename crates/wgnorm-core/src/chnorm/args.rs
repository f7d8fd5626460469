//! What a call of the channel engine asks for: the statistics kind, the running-statistics
//! update, the tensors, and the host-side mergeable moments of synchronised normalization.

use super::{ChannelView, Epilogue};
use crate::Tensor;

/// What the slot statistics are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Mean and variance: `y = (x - mean) * rstd` (then affine).
    #[default]
    MeanVariance,
    /// `y = x / ||x||_2` over the slot, 0 where the norm is 0.
    L2,
    /// `y = x / ||x||_1` over the slot, 0 where the norm is 0.
    L1,
    /// Quadratic mean without centring, `y = x / sqrt(mean(x^2) + eps)`, optionally over the
    /// unmasked tokens only and with a running value.
    QuadraticMean,
}

impl Reduction {
    /// Every reduction.
    pub const ALL: [Reduction; 4] = [
        Reduction::MeanVariance,
        Reduction::L2,
        Reduction::L1,
        Reduction::QuadraticMean,
    ];

    /// REDUCE of the finalize pass.
    pub(crate) fn code(self) -> f64 {
        match self {
            Reduction::MeanVariance => 0.0,
            Reduction::L2 => 1.0,
            Reduction::L1 => 2.0,
            Reduction::QuadraticMean => 3.0,
        }
    }

    /// REDUCE of the moments pass (a quadratic mean accumulates the sum of squares).
    pub(crate) fn moments_code(self) -> f64 {
        match self {
            Reduction::QuadraticMean => 1.0,
            other => other.code(),
        }
    }
}

/// A running-value update of the quadratic mean: `phi += (psi2 - phi) * warm`
/// (`warm` = 1/t during warm-up, else 0), then `phi = (1 - momentum) phi + momentum psi2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QmUpdate {
    /// Running-statistics momentum, PyTorch convention (weight of the new value).
    pub momentum: f32,
    /// `1/t` during warm-up step t, else 0.
    pub warm: f32,
}

/// Which statistics normalize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Statistics {
    /// Statistics of this batch; optionally update running statistics (BatchNorm training).
    Batch(Option<RunningUpdate>),
    /// The running statistics (BatchNorm inference).
    Running,
    /// Update the running statistics from this batch (`r = (1 - momentum) r + momentum s`), then
    /// normalize with the **updated** running statistics. `estimated`: the variance fed to the
    /// running one is `mean((x - rm_old)^2) = var_b + (mean_b - rm_old)^2`, centred on the old
    /// running mean; otherwise the unbiased or biased batch variance.
    UpdatedRunning {
        /// Weight of the new value (PyTorch convention).
        momentum: f32,
        /// Feed the unbiased batch variance to the running one.
        unbiased: bool,
        /// Feed the variance centred on the old running mean instead.
        estimated: bool,
    },
    /// `w_src * running + (1 - w_src) * batch` for the mean and the variance (batch variance
    /// unbiased); the running (source) statistics are read, not updated.
    Mixed {
        /// Weight of the running (source) statistics.
        w_src: f32,
    },
    /// With [`Reduction::QuadraticMean`]: normalize with this batch's quadratic mean or (when
    /// `use_running`) the running value in `running_var` as it was before this step, and
    /// optionally update the running value.
    QuadraticMean {
        /// Normalize with the running value instead of the batch's.
        use_running: bool,
        /// Update the running value from this batch.
        update: Option<QmUpdate>,
    },
}

/// How running statistics are updated from a batch: `r = (1 - m) r + m s` (PyTorch convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunningUpdate {
    /// `None`: cumulative moving average, `m = 1 / num_batches_tracked` (PyTorch momentum=None).
    pub momentum: Option<f32>,
    /// Feed the unbiased variance `n / (n - 1) var` to the running variance (PyTorch); else biased.
    pub unbiased: bool,
}

/// Tensors of one call. `weight`/`bias` are f32 with one value per channel;
/// `running_mean`/`running_var` are f32 with one value per slot of `r` (BatchNorm: per channel),
/// updated in place; `stats` receives `(mean, rstd)` f32 pairs per slot (`[slots, 2]`).
#[derive(Clone, Copy, Debug)]
pub struct ChannelNormArgs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// How x is seen for the reduction.
    pub view: ChannelView,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: Option<&'a Tensor>,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: Option<&'a Tensor>,
    /// Receives `(mean, rstd)` per slot (f32 `[slots, 2]`) when given.
    pub stats: Option<&'a Tensor>,
    /// Which statistics normalize, and what they update.
    pub statistics: Statistics,
    /// With `Statistics::Batch`: normalize with these merged moments (f32 `[slots, 3]`:
    /// count, mean, M2 per slot, see [`Moments`]) instead of this tensor's own; the running
    /// update uses them too. The seam for synchronised BatchNorm across devices.
    pub moments: Option<&'a Tensor>,
    /// The apply pass's epilogue ([`Epilogue::AFFINE`] unless a method brings its own).
    pub epilogue: Epilogue,
    /// The epilogue's per-call input, f32: one value or one per channel (see
    /// [`Epilogue::input`]).
    pub aux: Option<&'a Tensor>,
    /// Token padding mask, f32 `[B, T]` with 1 = padding, for token views `[1, T*B, C, 1]` of
    /// `x[T, B, C]` with a quadratic mean: padded tokens are left out of the statistics (they are
    /// still normalized).
    pub mask: Option<&'a Tensor>,
}

impl<'a> ChannelNormArgs<'a> {
    /// `x` to `y` in `view` with batch statistics and nothing else: no affine, no running
    /// statistics, no saved statistics, no merged moments, the affine epilogue, no mask. Set the
    /// rest with
    /// struct update syntax: `ChannelNormArgs { weight, ..ChannelNormArgs::new(x, y, view) }`.
    pub fn new(x: &'a Tensor, y: &'a Tensor, view: ChannelView) -> ChannelNormArgs<'a> {
        ChannelNormArgs {
            x,
            y,
            view,
            weight: None,
            bias: None,
            running_mean: None,
            running_var: None,
            stats: None,
            statistics: Statistics::Batch(None),
            moments: None,
            epilogue: Epilogue::AFFINE,
            aux: None,
            mask: None,
        }
    }
}

/// Mergeable per-slot statistics on the host: count, mean and M2 (sum of squared deviations).
/// GPU tensors of moments are f32 `[slots, 3]` in this order.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Values per slot.
    pub count: Vec<f64>,
    /// Saved statistics: the mean of each normalized row or slot (f32).
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean per slot.
    pub m2: Vec<f64>,
}

impl Moments {
    /// From the f32 `[slots, 3]` layout of a downloaded moments tensor.
    pub fn from_f32(data: &[f32]) -> Moments {
        let g = |k: usize| data.iter().skip(k).step_by(3).map(|&v| v as f64).collect();
        Moments {
            count: g(0),
            mean: g(1),
            m2: g(2),
        }
    }

    /// The f32 `[slots, 3]` layout, for uploading merged moments.
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.count.len())
            .flat_map(|i| [self.count[i] as f32, self.mean[i] as f32, self.m2[i] as f32])
            .collect()
    }

    /// Chan et al.'s pairwise merge, slot by slot, in f64: the moments of the union of both
    /// sets of values. Associative, so any all-reduce tree gives the same result up to rounding.
    pub fn merge(&self, other: &Moments) -> Moments {
        let mut out = self.clone();
        for i in 0..self.count.len() {
            let (na, nb) = (self.count[i], other.count[i]);
            let n = na + nb;
            if n == 0.0 {
                continue;
            }
            let delta = other.mean[i] - self.mean[i];
            out.count[i] = n;
            out.mean[i] = self.mean[i] + delta * nb / n;
            out.m2[i] = self.m2[i] + other.m2[i] + delta * delta * na * nb / n;
        }
        out
    }

    /// Biased variance per slot.
    pub fn variance(&self) -> Vec<f64> {
        self.m2
            .iter()
            .zip(&self.count)
            .map(|(m, n)| m / n)
            .collect()
    }
}

//! How a channel-engine call binds x and y when they are larger than one storage binding:
//! in windows of samples p (samples with their own statistics), or, for a single-sample view
//! such as BatchNorm's `[1, N, C, HW]`, in windows of q whose partial moments land in disjoint
//! tiles that one finalize pass merges with Chan's formula.

use super::{ChannelNormArgs, ChannelView, Statistics};
use crate::binding;
use crate::{Error, Result};

/// The binding windows of a call.
#[derive(Clone, Debug)]
pub(super) enum Split {
    /// Windows of samples: each window reduces, finalizes and applies on its own (one window
    /// when x fits one binding).
    Samples(binding::Windows),
    /// Windows of q of a single-sample view: every window's moments go to its own
    /// `window_tiles` tiles of each slot, one finalize merges all of them in tile order, then
    /// every window applies the coefficients.
    Q {
        windows: binding::Windows,
        window_tiles: u32,
    },
}

/// One window of a call: its units of p or q, its view and where it reads and writes the
/// engine's per-slot scratch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub first: u64,
    pub len: u64,
    pub view: ChannelView,
    /// First slot of this window in the saved statistics.
    pub slot_base: u32,
    /// Tiles this window's moments dispatch covers, and the first of them.
    pub window_tiles: u32,
    pub tile_base: u32,
}

/// Which windows a call may be split into.
#[derive(Clone, Copy, Debug)]
pub(super) struct Windowing {
    /// Windows of samples p (p > 1, samples with their own statistics).
    pub samples: bool,
    /// Windows of q (a single-sample view).
    pub q: bool,
}

impl Windowing {
    /// What a normalize call allows ([`sample_windowable`], [`q_windowable`]).
    pub fn of(a: &ChannelNormArgs) -> Windowing {
        Windowing {
            samples: sample_windowable(a),
            q: q_windowable(a),
        }
    }
}

impl Split {
    /// The windows of a call over `view` whose moments pass has tiles of `tile_len` accesses of
    /// `width` elements. `bytes_per_elem`: x's dtype size; `limit` and `align`: the device's
    /// storage-binding size and offset alignment. A tensor past the limit that `ok` does not
    /// allow to split is `TooLargeForBinding`.
    pub fn of(
        view: ChannelView,
        ok: Windowing,
        width: u32,
        tile_len: u32,
        bytes_per_elem: u64,
        (limit, align): (u64, u64),
    ) -> Result<Split> {
        let v = view;
        let x_bytes = v.numel() as u64 * bytes_per_elem;
        if x_bytes > limit && !(ok.samples && v.p > 1) && !(ok.q && v.p == 1) {
            return Err(too_large(x_bytes, limit));
        }
        if v.p == 1 && x_bytes > limit {
            let unit_bytes = (v.r * v.s) as u64 * bytes_per_elem;
            let per_window = binding::window_rows(v.q, &[unit_bytes], limit, align).ok_or(
                Error::TooLargeForBinding {
                    what: "x (one step of q)".into(),
                    bytes: unit_bytes,
                    limit,
                },
            )?;
            let window_accesses = (per_window * v.s / width as usize) as u64;
            let window_tiles = window_accesses.div_ceil(tile_len.max(1) as u64);
            return Ok(Split::Q {
                windows: binding::Windows {
                    total: v.q as u64,
                    per_window: per_window as u64,
                    unit_bytes,
                },
                window_tiles: u32::try_from(window_tiles).map_err(|_| too_large(x_bytes, limit))?,
            });
        }
        let unit_bytes = (v.q * v.r * v.s) as u64 * bytes_per_elem;
        let per_window = binding::window_rows(v.p, &[unit_bytes], limit, align).ok_or(
            Error::TooLargeForBinding {
                what: "x (one sample)".into(),
                bytes: unit_bytes,
                limit,
            },
        )?;
        Ok(Split::Samples(binding::Windows {
            total: v.p as u64,
            per_window: per_window as u64,
            unit_bytes,
        }))
    }

    /// Tiles per slot in the partials: every window's, given `tiles` for the unsplit call.
    pub fn tiles(&self, tiles: u32) -> Result<u32> {
        match self {
            Split::Samples(_) => Ok(tiles),
            Split::Q {
                windows,
                window_tiles,
            } => {
                let n = windows.iter().count() as u64 * *window_tiles as u64;
                u32::try_from(n).map_err(|_| Error::InvalidParameter {
                    name: "shape",
                    value: format!("{n} tiles per slot"),
                    why: "too many binding windows for 32-bit tile indexing",
                })
            }
        }
    }

    /// Whether one finalize pass serves every window (windows of q).
    pub fn finalize_once(&self) -> bool {
        matches!(self, Split::Q { .. })
    }

    /// The windows of a call over `view` with `tiles` tiles per slot in the partials.
    pub fn windows(&self, view: ChannelView, tiles: u32) -> Vec<Window> {
        match self {
            Split::Samples(w) => w
                .iter()
                .map(|(first, len)| Window {
                    first,
                    len,
                    view: ChannelView {
                        p: len as usize,
                        ..view
                    },
                    slot_base: (first as usize * view.r) as u32,
                    window_tiles: tiles,
                    tile_base: 0,
                })
                .collect(),
            Split::Q {
                windows,
                window_tiles,
            } => windows
                .iter()
                .enumerate()
                .map(|(i, (first, len))| Window {
                    first,
                    len,
                    view: ChannelView {
                        q: len as usize,
                        ..view
                    },
                    slot_base: 0,
                    window_tiles: *window_tiles,
                    tile_base: i as u32 * window_tiles,
                })
                .collect(),
        }
    }

    /// The window of `r` (x or y) a window covers.
    pub fn range(&self, r: &binding::BufferRange, w: &Window) -> binding::BufferRange {
        match self {
            Split::Samples(ws) | Split::Q { windows: ws, .. } => ws.range(r, w.first, w.len),
        }
    }
}

fn too_large(bytes: u64, limit: u64) -> Error {
    Error::TooLargeForBinding {
        what: "x (this call cannot be split into binding windows)".into(),
        bytes,
        limit,
    }
}

/// Whether a call may bind x and y in windows of samples p: each sample has its own slots
/// (GroupNorm, InstanceNorm, per-sample views) and its own statistics (the batch's, or given
/// merged moments read from the window's first slot) or the running ones, with no running
/// update (which would count each window as a step; instance norms update theirs from merged
/// moments in a pass of their own), and no per-call epilogue input or mask.
pub(super) fn sample_windowable(a: &ChannelNormArgs) -> bool {
    a.view.p > 1
        && matches!(a.statistics, Statistics::Batch(None) | Statistics::Running)
        && a.aux.is_none()
        && a.mask.is_none()
}

/// Whether a single-sample call (BatchNorm) may bind x and y in windows of q: the moments of
/// every window land in their own tiles and one finalize merges them, so every kind of
/// statistics works; only a token mask, indexed by position in q, is not windowed.
pub(super) fn q_windowable(a: &ChannelNormArgs) -> bool {
    a.view.p == 1 && a.mask.is_none()
}

/// Whether x and y may be bound larger than one storage binding at all.
pub(super) fn windowable(a: &ChannelNormArgs) -> bool {
    sample_windowable(a) || q_windowable(a)
}

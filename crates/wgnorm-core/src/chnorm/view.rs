//! Channel views: a row-major activation seen as `[p, q, r, s]` with one statistics slot per
//! `(p, r)`, reduced over `(q, s)`. Every batch-statistics op is a choice of view; channels-last
//! is another view, not a transpose.

use crate::{Error, Result};

/// x (row-major) seen as `[p, q, r, s]`, statistics per (p, r) over (q, s). Each slot covers
/// `cg` channels; element (p, q, r, s) belongs to channel `r * cg + s / sdiv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelView {
    /// Outer dim: each p has its own slots.
    pub p: usize,
    /// Reduced dim between p and r.
    pub q: usize,
    /// Slot dim: one slot per (p, r).
    pub r: usize,
    /// Inner dim, reduced (contiguous).
    pub s: usize,
    /// Channels per slot (groups: C/G; otherwise 1).
    pub cg: usize,
    /// Elements of s per channel.
    pub sdiv: usize,
}

/// Memory layout of a `(N, C, *)` activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Channels first: `(N, C, *spatial)`.
    #[default]
    Nchw,
    /// Channels last: `(N, *spatial, C)`; no transpose pass is made.
    Nhwc,
}

fn split_nc(shape: &[usize], layout: Layout, what: &'static str) -> Result<(usize, usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::AxisOutOfRange {
            what,
            axis: 1,
            rank: shape.len(),
        });
    }
    let n = shape[0];
    Ok(match layout {
        Layout::Nchw => (n, shape[1], shape[2..].iter().product()),
        Layout::Nhwc => (
            n,
            shape[shape.len() - 1],
            shape[1..shape.len() - 1].iter().product(),
        ),
    })
}

impl ChannelView {
    /// BatchNorm: statistics per channel over N and the spatial dims.
    pub fn batch_norm(shape: &[usize], layout: Layout) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "batch_norm (input must be (N, C, *))")?;
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: 1,
                q: n,
                r: c,
                s: hw,
                cg: 1,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: 1,
                q: n * hw,
                r: c,
                s: 1,
                cg: 1,
                sdiv: 1,
            },
        })
    }

    /// Batch statistics per chunk: per (chunk of `chunk` consecutive samples, channel) over the
    /// chunk and the spatial dims. `chunk` must divide N.
    pub fn per_chunk(shape: &[usize], layout: Layout, chunk: usize) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(
            shape,
            layout,
            "per-chunk statistics (input must be (N, C, *))",
        )?;
        if chunk == 0 || n % chunk != 0 {
            return Err(Error::InvalidParameter {
                name: "chunk size",
                value: format!("{chunk} for a batch of {n}"),
                why: "must be >= 1 and divide the batch (a smaller last chunk is not supported: pad or drop it)",
            });
        }
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: n / chunk,
                q: chunk,
                r: c,
                s: hw,
                cg: 1,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: n / chunk,
                q: chunk * hw,
                r: c,
                s: 1,
                cg: 1,
                sdiv: 1,
            },
        })
    }

    /// InstanceNorm: statistics per (sample, channel) over the spatial dims.
    pub fn instance_norm(shape: &[usize], layout: Layout) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "instance_norm (input must be (N, C, *))")?;
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: n,
                q: 1,
                r: c,
                s: hw,
                cg: 1,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: n,
                q: hw,
                r: c,
                s: 1,
                cg: 1,
                sdiv: 1,
            },
        })
    }

    /// One slot per position of the other dims, reduced along `axis` alone.
    pub fn along_axis(shape: &[usize], axis: isize) -> Result<ChannelView> {
        let rank = shape.len();
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if a < 0 || a >= rank as isize {
            return Err(Error::AxisOutOfRange {
                what: "reduced axis",
                axis,
                rank,
            });
        }
        let a = a as usize;
        let (pre, n, post) = (
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product::<usize>(),
        );
        Ok(if post == 1 {
            // Contiguous rows: vector access along them.
            ChannelView {
                p: pre,
                q: 1,
                r: 1,
                s: n,
                cg: 1,
                sdiv: n.max(1),
            }
        } else {
            ChannelView {
                p: pre,
                q: n,
                r: post,
                s: 1,
                cg: 1,
                sdiv: 1,
            }
        })
    }

    /// One slot per position of the dims not in `axes`, reduced over `axes`. The dims must read as `[kept][reduced][kept][reduced]` (each
    /// block possibly empty), which covers every contiguous choice and NCHW's [0, 2, 3].
    pub fn over_axes(shape: &[usize], axes: &[isize]) -> Result<ChannelView> {
        let rank = shape.len();
        let mut reduced = vec![false; rank];
        for &ax in axes {
            let a = if ax < 0 { ax + rank as isize } else { ax };
            if a < 0 || a >= rank as isize {
                return Err(Error::AxisOutOfRange {
                    what: "reduced axes",
                    axis: ax,
                    rank,
                });
            }
            // As PyTorch and NumPy: an axis listed twice is a mistake in the caller's list.
            if reduced[a as usize] {
                return Err(Error::InvalidParameter {
                    name: "axes",
                    value: format!("{axes:?}"),
                    why: "an axis appears more than once",
                });
            }
            reduced[a as usize] = true;
        }
        // A dim of size 1 is neither kept nor reduced in effect: join it to the run before it,
        // so [5, 1, 7, 3] over axes (0, 2) is one reduced run [35] and a kept [3].
        for d in 1..rank {
            if shape[d] == 1 {
                reduced[d] = reduced[d - 1];
            }
        }
        // Runs of kept / reduced dims and their sizes.
        let mut runs: Vec<(bool, usize)> = Vec::new();
        for (d, &red) in reduced.iter().enumerate() {
            match runs.last_mut() {
                Some((r, size)) if *r == red => *size *= shape[d],
                _ => runs.push((red, shape[d])),
            }
        }
        if runs.first().is_some_and(|r| r.0) {
            runs.insert(0, (false, 1));
        }
        if runs.len() > 4 {
            return Err(Error::InvalidParameter {
                name: "axes",
                value: format!("{axes:?}"),
                why: "reduced and kept dims alternate more than [kept][reduced][kept][reduced]: transpose first",
            });
        }
        let get = |i: usize| runs.get(i).map_or(1, |r| r.1);
        let s = get(3);
        Ok(ChannelView {
            p: get(0),
            q: get(1),
            r: get(2),
            s,
            cg: 1,
            sdiv: s.max(1),
        })
    }

    /// GroupNorm: statistics per (sample, group of C / groups channels) over those channels and
    /// the spatial dims. `groups` must divide C.
    pub fn group_norm(shape: &[usize], layout: Layout, groups: usize) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "group_norm (input must be (N, C, *))")?;
        if groups == 0 || c % groups != 0 {
            return Err(Error::InvalidParameter {
                name: "num_groups",
                value: groups.to_string(),
                why: "must be >= 1 and divide the channel count",
            });
        }
        let cg = c / groups;
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: n,
                q: 1,
                r: groups,
                s: cg * hw,
                cg,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: n,
                q: hw,
                r: groups,
                s: cg,
                cg,
                sdiv: 1,
            },
        })
    }

    /// Statistics slots: `p * r`.
    pub fn slots(&self) -> usize {
        self.p * self.r
    }
    /// Channels: `r * cg`.
    pub fn channels(&self) -> usize {
        self.r * self.cg
    }
    /// Elements: `p * q * r * s`.
    pub fn numel(&self) -> usize {
        self.p * self.q * self.r * self.s
    }
    /// Elements each slot's statistics are taken over.
    pub fn count(&self) -> usize {
        self.q * self.s
    }

    /// A channels-last grouped view (`s = cg`, `sdiv = 1`: GroupNorm NHWC) seen with one slot per
    /// channel of each sample, `[p, q, r * cg, 1]`: slot `(p, c)` is `p * channels + c`, so the
    /// slots of a group's channels, and their tiles of partial moments, are consecutive.
    pub fn per_channel(&self) -> ChannelView {
        ChannelView {
            p: self.p,
            q: self.q,
            r: self.r * self.cg,
            s: 1,
            cg: 1,
            sdiv: 1,
        }
    }
}

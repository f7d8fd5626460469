//! How a channel-engine call binds x and y when they are larger than one storage binding.
//!
//! Every pass indexes the whole tensor as the unsplit call would; a binding window is only a
//! range of the call's own workgroups (moments) or invocations (apply) and the range of x that
//! they read, bound from an aligned access `base` on (the kernels subtract it). So a window
//! reduces exactly the tiles the unsplit call reduces, one finalize merges every slot's tiles
//! in the same fixed order, and the result is the same bits whatever the binding limit: a
//! sample's statistics do not depend on how many samples share the call or on the windowing.
//!
//! The moments pass numbers its workgroups so that consecutive ones read consecutive memory
//! (`channel_norm/moments.wgsl`): `(slot, tile)` when Q = 1 (a slot is one contiguous run),
//! `(p, tile, r)` otherwise (a tile of every slot of p covers the same steps of q), and
//! `(p, tile, chunk)` for lanes per channel. A window takes whole groups of them.

use crate::binding::BufferRange;
use crate::{Context, Error, Result};

use super::ChannelView;

/// One dispatch of a pass over one binding window of x (and y).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The call's first workgroup (moments) or invocation (apply) in this dispatch.
    pub first: u64,
    /// Workgroups or invocations in this dispatch.
    pub count: u64,
    /// Access of the tensor the binding starts at (aligned).
    pub base: u64,
    /// Access the binding ends at (exclusive).
    pub end: u64,
}

impl Span {
    /// The window of `r` (a tensor of `total` accesses of `access_bytes`) this span binds: `r`
    /// itself when the span covers the tensor.
    pub fn bind(&self, r: &BufferRange, total: u64, access_bytes: u64) -> BufferRange {
        if self.base == 0 && self.end >= total {
            r.clone()
        } else {
            r.window(
                self.base * access_bytes,
                (self.end - self.base) * access_bytes,
            )
        }
    }
}

/// A tensor's accesses and the device's binding limits, in accesses.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Accesses in the tensor.
    pub total: u64,
    /// Most accesses one binding holds.
    pub limit: u64,
    /// A binding starts at a multiple of this many accesses.
    pub align: u64,
    /// Bytes per access.
    pub access_bytes: u64,
}

impl Budget {
    /// `total` accesses of `access_bytes` bytes under a binding limit and offset alignment in
    /// bytes.
    pub fn new(total: u64, access_bytes: u64, (limit, align): (u64, u64)) -> Budget {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let ab = access_bytes.max(1);
        Budget {
            total,
            // Bindings round up to 4 bytes.
            limit: (limit / 4 * 4) / ab,
            align: (align.max(4) / gcd(align.max(4), ab)).max(1),
            access_bytes: ab,
        }
    }

    /// `total` accesses of `access_bytes` bytes under `ctx`'s binding limits.
    pub fn of(ctx: &Context, total: u64, access_bytes: u64) -> Budget {
        let limits = ctx.limits();
        Budget::new(
            total,
            access_bytes,
            (
                limits.max_storage_buffer_binding_size,
                limits.min_storage_buffer_offset_alignment as u64,
            ),
        )
    }

    fn fits_whole(&self) -> bool {
        self.total <= self.limit
    }
}

/// The moments pass's workgroups as groups that read one contiguous range of x each.
#[derive(Clone, Copy, Debug)]
pub struct MomentsGroups {
    /// The reduced view the pass runs on (the per-channel view of grouped calls).
    pub view: ChannelView,
    /// Accesses of a slot per step of q (`s_v`), or 1 with lanes per channel.
    pub run: u64,
    /// Accesses per step of q of the whole view (`r * s_v`, or the channel vectors per token).
    pub step: u64,
    /// Tiles per slot.
    pub tiles: u64,
    /// Accesses per tile.
    pub tile_len: u64,
    /// Workgroups per group: 1 (Q = 1: a group is one tile of one slot), R, or the channel
    /// chunks.
    pub workgroups: u64,
    /// Q = 1 without lanes per channel: groups are `(slot, tile)`.
    pub slot_major: bool,
}

impl MomentsGroups {
    /// The groups of a moments pass over `view` with `width` elements per access along the
    /// reduced axes, lanes per channel (`vec`: four channels per access) or not, `tiles` of
    /// `tile_len` accesses per slot and `wg` lanes per workgroup.
    pub fn of(
        view: ChannelView,
        (channel_lanes, vec): (bool, bool),
        width: u32,
        (tiles, tile_len): (u32, u32),
        wg: u32,
    ) -> MomentsGroups {
        let (tiles, tile_len) = (tiles as u64, tile_len as u64);
        if channel_lanes {
            let lanes = if vec { view.r / 4 } else { view.r } as u64;
            return MomentsGroups {
                view,
                run: 1,
                step: lanes,
                tiles,
                tile_len,
                workgroups: lanes.div_ceil(wg as u64),
                slot_major: false,
            };
        }
        let run = (view.s / width.max(1) as usize) as u64;
        MomentsGroups {
            view,
            run,
            step: view.r as u64 * run,
            tiles,
            tile_len,
            workgroups: if view.q == 1 { 1 } else { view.r as u64 },
            slot_major: view.q == 1,
        }
    }

    fn count(&self) -> u64 {
        let v = &self.view;
        if self.slot_major {
            v.slots() as u64 * self.tiles
        } else {
            v.p as u64 * self.tiles
        }
    }

    /// Accesses of x group `i` reads: `[start, end)`, empty for an empty tile.
    fn range(&self, i: u64) -> (u64, u64) {
        let len = self.view.q as u64 * self.run;
        let (outer, t) = (i / self.tiles, i % self.tiles);
        let j0 = (t * self.tile_len).min(len);
        let j1 = ((t + 1) * self.tile_len).min(len);
        if self.slot_major {
            let s0 = outer * self.run;
            return (s0 + j0, s0 + j1);
        }
        let q0 = outer * self.view.q as u64;
        if j1 <= j0 {
            let at = (q0 + j0 / self.run) * self.step;
            return (at, at);
        }
        let (qa, qb) = (j0 / self.run, (j1 - 1) / self.run + 1);
        ((q0 + qa) * self.step, (q0 + qb) * self.step)
    }

    /// The dispatches of the moments pass: one when x fits a binding, else greedy windows of
    /// whole groups.
    pub fn spans(&self, b: Budget) -> Result<Vec<Span>> {
        let n = self.count();
        let wgs = self.workgroups;
        if b.fits_whole() {
            return Ok(vec![Span {
                first: 0,
                count: n * wgs,
                base: 0,
                end: b.total,
            }]);
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < n {
            let base = self.range(i).0 / b.align * b.align;
            // Group ends grow with i: the last group whose end fits, by bisection.
            let (mut lo, mut hi) = (i, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.range(mid).1 - base <= b.limit {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo == i {
                let (s, e) = self.range(i);
                return Err(too_large(
                    "x (one moments tile of every slot it spans)",
                    e - s,
                    &b,
                ));
            }
            let end = self.range(lo - 1).1.max(base);
            out.push(Span {
                first: i * wgs,
                count: (lo - i) * wgs,
                base,
                end,
            });
            i = lo;
        }
        Ok(out)
    }
}

/// The dispatches of an elementwise-shaped pass: windows of whole units of `unit` accesses
/// (an invocation's `block`, a block of tokens of every channel vector `block * cv`, a tile of
/// tokens), `per_unit` invocations or workgroups each.
pub fn apply_spans(b: Budget, unit: u64, per_unit: u64) -> Result<Vec<Span>> {
    let unit = unit.max(1);
    let units = b.total.div_ceil(unit);
    if b.fits_whole() {
        return Ok(vec![Span {
            first: 0,
            count: units * per_unit,
            base: 0,
            end: b.total,
        }]);
    }
    // A window's binding starts up to align - 1 accesses before its first unit.
    let per_window = b.limit.saturating_sub(b.align - 1) / unit;
    if per_window == 0 {
        return Err(too_large("x (one apply block)", unit, &b));
    }
    Ok((0..units)
        .step_by(per_window as usize)
        .map(|u0| {
            let u1 = (u0 + per_window).min(units);
            Span {
                first: u0 * per_unit,
                count: (u1 - u0) * per_unit,
                base: u0 * unit / b.align * b.align,
                end: (u1 * unit).min(b.total),
            }
        })
        .collect())
}

fn too_large(what: &str, accesses: u64, b: &Budget) -> Error {
    Error::TooLargeForBinding {
        what: what.into(),
        bytes: accesses * b.access_bytes,
        limit: b.limit * b.access_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(view: ChannelView, tiles: u32, tile_len: u32) -> MomentsGroups {
        MomentsGroups::of(view, (false, false), 1, (tiles, tile_len), 256)
    }

    /// Windows cover every workgroup once, in order, and each binding holds its groups' reads.
    fn check_cover(g: &MomentsGroups, b: Budget) {
        let spans = g.spans(b).unwrap();
        let mut next = 0;
        for s in &spans {
            assert_eq!(s.first, next);
            assert!(s.end - s.base <= b.limit, "{s:?}");
            assert_eq!(s.base % b.align, 0);
            for i in s.first / g.workgroups..(s.first + s.count) / g.workgroups {
                let (a, e) = g.range(i);
                assert!(
                    a >= s.base && e <= s.end,
                    "group {i} {a}..{e} outside {s:?}"
                );
            }
            next += s.count;
        }
        assert_eq!(next, g.count() * g.workgroups);
    }

    #[test]
    fn moments_windows_cover_slot_major_and_q_major_views() {
        let nchw =
            ChannelView::group_norm(&[3, 32, 64, 64], super::super::Layout::Nchw, 8).unwrap();
        check_cover(
            &groups(nchw, 16, 1024),
            Budget::new(nchw.numel() as u64, 4, (1 << 16, 256)),
        );
        let bn = ChannelView::batch_norm(&[5, 16, 30, 30], super::super::Layout::Nchw).unwrap();
        check_cover(
            &groups(bn, 7, 643),
            Budget::new(bn.numel() as u64, 2, (1 << 16, 256)),
        );
    }

    #[test]
    fn apply_windows_cover_every_invocation_once() {
        let b = Budget::new(1_000_003, 4, (1 << 16, 256));
        let spans = apply_spans(b, 16, 1).unwrap();
        assert_eq!(
            spans.iter().map(|s| s.count).sum::<u64>(),
            1_000_003u64.div_ceil(16)
        );
        for s in &spans {
            assert!(s.end - s.base <= b.limit && s.base <= s.first * 16);
        }
    }
}

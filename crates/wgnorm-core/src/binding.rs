//! Binding user tensors: the checks that keep wgpu validation errors away from the caller, and a
//! cache of bind groups so a warm call allocates nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::context::Slot;
use crate::uniform::{self, UniformBlock, MAX_UNIFORM_BYTES};
use crate::{Context, Error, Result, Tensor};

/// Storage bindings a kernel may have after its uniform block: WebGPU's default
/// `max_storage_buffers_per_shader_stage`, so every kernel runs on a device made with
/// `wgpu::Limits::default()`.
pub const MAX_STORAGE: usize = 8;

/// A checked storage binding: buffer, byte offset and byte size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BufferRange {
    /// The buffer.
    pub buffer: wgpu::Buffer,
    /// Byte offset of the range.
    pub offset: u64,
    /// Byte size of the range (a multiple of 4).
    pub size: u64,
}

/// Checks that `t` can be bound as a storage buffer on this device and returns its range.
/// `what` names the argument in the error.
pub fn storage_range(ctx: &Context, what: &str, t: &Tensor) -> Result<BufferRange> {
    let r = storage_range_unbounded(ctx, what, t)?;
    let limit = ctx.limits().max_storage_buffer_binding_size;
    if t.byte_len() > limit {
        return Err(Error::TooLargeForBinding {
            what: what.into(),
            bytes: t.byte_len(),
            limit,
        });
    }
    Ok(r)
}

/// [`storage_range`] without the binding-size limit: for engines that bind the range in
/// windows ([`BufferRange::window`]).
pub fn storage_range_unbounded(ctx: &Context, what: &str, t: &Tensor) -> Result<BufferRange> {
    let buffer = t.buffer();
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::MissingUsage {
            what: what.into(),
            missing: wgpu::BufferUsages::STORAGE,
        });
    }
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    if !t.offset().is_multiple_of(align) {
        return Err(Error::MisalignedOffset {
            what: what.into(),
            offset: t.offset(),
            alignment: align,
        });
    }
    // Storage bindings are sized in multiples of 4 bytes (an odd count of f16 needs 2 more).
    let size = t.byte_len().max(4).div_ceil(4) * 4;
    let end = t.offset() + size;
    if end > buffer.size() {
        return Err(Error::BufferTooSmall {
            what: format!("{what} (bindings round up to 4 bytes)"),
            offset: t.offset(),
            end,
            size: buffer.size(),
        });
    }
    Ok(BufferRange {
        buffer: buffer.clone(),
        offset: t.offset(),
        size,
    })
}

impl BufferRange {
    /// The sub-range of `len` bytes from byte `start` of this range (rounded up to 4 bytes,
    /// within the buffer): one window of a tensor bound in pieces. `start` must keep the
    /// device's offset alignment (the caller's window plan guarantees it).
    pub fn window(&self, start: u64, len: u64) -> BufferRange {
        let offset = self.offset + start;
        let size = len.max(4).div_ceil(4) * 4;
        BufferRange {
            buffer: self.buffer.clone(),
            offset,
            size: size.min(self.buffer.size() - offset),
        }
    }
}

/// Rows per window when `rows` rows are bound in windows of at most `limit` bytes, each window
/// starting at a multiple of `align` bytes in every bound tensor: `row_bytes` lists the bytes per
/// row of each windowed tensor. `None` when one row alone exceeds the limit.
pub fn window_rows(rows: usize, row_bytes: &[u64], limit: u64, align: u64) -> Option<usize> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let step = row_bytes.iter().filter(|&&b| b > 0).fold(1u64, |l, &b| {
        let need = align / gcd(b, align);
        l / gcd(l, need) * need
    });
    let widest = row_bytes.iter().copied().max().unwrap_or(0).max(1);
    let fit = limit / widest;
    if rows as u64 * widest <= limit {
        return Some(rows.max(1));
    }
    let chunk = fit / step * step;
    (chunk > 0).then_some(chunk as usize)
}

/// Accesses per binding window when `accesses` accesses of `access_bytes` bytes each are bound
/// in windows of at most the device's storage-binding limit, each window starting at a multiple
/// of its offset alignment: all of them when they fit one binding. For elementwise ops, whose
/// windows are independent. `what` names the tensor in the error.
pub fn window_accesses(ctx: &Context, what: &str, accesses: u64, access_bytes: u64) -> Result<u64> {
    let limits = ctx.limits();
    let limit = limits.max_storage_buffer_binding_size;
    let align = limits.min_storage_buffer_offset_alignment as u64;
    usize::try_from(accesses)
        .ok()
        .and_then(|a| window_rows(a, &[access_bytes], limit, align))
        .map(|w| w as u64)
        .ok_or_else(|| Error::TooLargeForBinding {
            what: what.into(),
            bytes: accesses.saturating_mul(access_bytes),
            limit,
        })
}

/// A tensor bound in windows of whole units (rows, samples, vector accesses): `total` units of
/// `unit_bytes` bytes, `per_window` to a window (all of them when they fit one binding).
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// Units in the tensor.
    pub total: u64,
    /// Units per window (the last window may hold fewer); at least 1.
    pub per_window: u64,
    /// Bytes per unit.
    pub unit_bytes: u64,
}

impl Windows {
    /// `(first unit, units)` of each window.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.total)
            .step_by(self.per_window.max(1) as usize)
            .map(|first| (first, self.per_window.min(self.total - first)))
    }

    /// The window of `r` holding units `first..first + len` (`r` itself when there is one
    /// window).
    pub fn range(&self, r: &BufferRange, first: u64, len: u64) -> BufferRange {
        if len == self.total {
            r.clone()
        } else {
            r.window(first * self.unit_bytes, len * self.unit_bytes)
        }
    }
}

/// Rejects an output of a composite op that shares a buffer with one of its inputs: each pass
/// of such an op binds a different pair of tensors, so no single dispatch would see the overlap,
/// and one rule (an output never aliases an input) is simpler for callers than a list of the
/// ops that happen to compute in place correctly.
pub fn check_output_distinct(output: (&str, &Tensor), inputs: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in inputs {
        if t.buffer() == output.1.buffer() {
            return Err(Error::AliasedBuffers {
                what: output.0.to_string(),
                other: name.to_string(),
            });
        }
    }
    Ok(())
}

/// Rejects an output that shares a buffer with any other binding: wgpu forbids a buffer being
/// both read-only and writable storage in one dispatch.
pub fn check_no_alias(named: &[(&str, Option<&BufferRange>, bool)]) -> Result<()> {
    for (i, (a, ra, wa)) in named.iter().enumerate() {
        for (b, rb, wb) in &named[i + 1..] {
            if let (Some(ra), Some(rb)) = (ra, rb) {
                if (*wa || *wb) && ra.buffer == rb.buffer {
                    return Err(Error::AliasedBuffers {
                        what: a.to_string(),
                        other: b.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    slots: &'static [Slot],
    /// The block's WGSL name and bytes: two blocks with equal bytes but different types never
    /// share an entry.
    block: &'static str,
    params: [u32; MAX_UNIFORM_BYTES / 4],
    ranges: [Option<BufferRange>; MAX_STORAGE],
}

/// Bind groups keyed by (layout, parameter block, buffer ranges). Each entry owns an immutable
/// uniform buffer holding its parameters, so a cached bind group can be recorded any number of
/// times into any encoder without a queue write that could race with an earlier recording.
///
/// Entries keep their buffers alive; the cache is cleared when it holds `capacity` entries, which
/// bounds that (inference loops reuse a handful of activation buffers and always hit).
pub struct BindCache {
    map: Mutex<HashMap<Key, wgpu::BindGroup>>,
    capacity: usize,
}

impl Default for BindCache {
    fn default() -> Self {
        BindCache {
            map: Mutex::default(),
            capacity: 256,
        }
    }
}

impl BindCache {
    /// The bind group for `slots` (slot 0 the uniform block `params`, then one range per storage
    /// slot).
    pub fn get<P: UniformBlock>(
        &self,
        ctx: &Context,
        slots: &'static [Slot],
        params: &P,
        ranges: &[&BufferRange],
    ) -> Result<wgpu::BindGroup> {
        if slots.len() != ranges.len() + 1 {
            return Err(Error::Device(format!(
                "internal: a layout of {} slots bound with {} buffers",
                slots.len(),
                ranges.len() + 1
            )));
        }
        // The ranges the layout binds, in order (an `Unused` slot's range is ignored); no
        // heap allocation on this, the warm, path.
        let used = || {
            slots[1..]
                .iter()
                .zip(ranges)
                .enumerate()
                .filter(|(_, (s, _))| **s != Slot::Unused)
                .map(|(i, (_, r))| (i as u32 + 1, *r))
        };
        let mut key_ranges: [Option<BufferRange>; MAX_STORAGE] = Default::default();
        for (k, (_, r)) in used().enumerate() {
            let Some(slot) = key_ranges.get_mut(k) else {
                return Err(Error::Device(format!(
                    "internal: a layout of more than {MAX_STORAGE} storage bindings"
                )));
            };
            *slot = Some(r.clone());
        }
        let key = Key {
            slots,
            block: P::WGSL_NAME,
            params: uniform::key_words(params),
            ranges: key_ranges,
        };
        if let Some(bg) = crate::locked(&self.map).get(&key) {
            return Ok(bg.clone());
        }
        // Created outside the lock: a device error here must not poison the cache.
        let size = std::mem::size_of::<P>() as u64;
        let uniform =
            ctx.create_buffer("wgnorm params", size, wgpu::BufferUsages::UNIFORM, true)?;
        uniform
            .slice(..)
            .get_mapped_range_mut()
            .map_err(|e| Error::Device(e.to_string()))?
            .copy_from_slice(bytemuck::bytes_of(params));
        uniform.unmap();
        let (bgl, _) = ctx.layout(slots)?;
        let mut entries = Vec::with_capacity(slots.len());
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        });
        for (binding, r) in used() {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &r.buffer,
                    offset: r.offset,
                    size: wgpu::BufferSize::new(r.size),
                }),
            });
        }
        let device = ctx.device();
        let bg = ctx.capture("wgnorm bind group", 0, || {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgnorm"),
                layout: &bgl,
                entries: &entries,
            })
        })?;
        let mut map = crate::locked(&self.map);
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(key, bg.clone());
        Ok(bg)
    }

    /// Entries currently cached.
    pub fn len(&self) -> usize {
        crate::locked(&self.map).len()
    }

    /// Whether no bind group is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits `groups` workgroups over a 2D grid within the per-dimension limit. Kernels recover the
/// linear index as `wid.x + wid.y * num_workgroups.x` and ignore indices past the end.
pub fn grid(ctx: &Context, groups: u64) -> (u32, u32) {
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    if groups <= max {
        (groups as u32, 1)
    } else {
        (max as u32, groups.div_ceil(max) as u32)
    }
}

/// Range of a context dummy buffer bound in place of an absent optional tensor.
pub fn dummy_range(buffer: &wgpu::Buffer) -> BufferRange {
    BufferRange {
        buffer: buffer.clone(),
        offset: 0,
        size: buffer.size(),
    }
}

/// Records one dispatch of `pipeline` with bind group 0 `bind` in a compute pass of its own.
pub fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    groups: (u32, u32, u32),
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, groups.2);
}

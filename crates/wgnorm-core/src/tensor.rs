//! A tensor is a byte range of a `wgpu::Buffer` read as a row-major array of one dtype.

use crate::{DType, Error, Result};

/// A view of a GPU buffer as a dense row-major tensor: `shape[0]` is the slowest dimension.
///
/// The buffer is the caller's (wgnorm never copies it); `offset` is in bytes and must be a
/// multiple of the device's `min_storage_buffer_offset_alignment` when the tensor is bound.
/// Cloning a `Tensor` clones the handle, not the data.
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl Tensor {
    /// Views `buffer` from byte `offset` as a tensor of `shape` and `dtype`. Fails if the range does
    /// not fit the buffer; usages and alignment are checked where the tensor is bound.
    pub fn from_buffer(
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let bytes = checked_bytes("tensor", shape, dtype)?;
        let end = offset.checked_add(bytes).ok_or_else(|| Error::TooLarge {
            what: "tensor offset + bytes".into(),
            value: bytes,
            limit: u64::MAX - offset,
        })?;
        let t = Tensor {
            buffer,
            offset,
            shape: shape.to_vec(),
            dtype,
        };
        if end > t.buffer.size() {
            return Err(Error::BufferTooSmall {
                what: "tensor".into(),
                offset,
                end,
                size: t.buffer.size(),
            });
        }
        Ok(t)
    }

    /// The buffer the tensor views.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Byte offset of element 0 in the buffer.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Elements: the product of the shape (checked when the tensor was made: it fits its
    /// buffer, so it cannot overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes the elements occupy (without any binding padding).
    pub fn byte_len(&self) -> u64 {
        self.numel() as u64 * self.dtype.size()
    }
    /// The same data seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel("reshape", shape)?;
        if n != self.numel() {
            return Err(Error::ShapeMismatch {
                what: "reshape (element count)".into(),
                expected: self.shape.clone(),
                got: shape.to_vec(),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// `Err(DTypeMismatch)` naming the argument `what` unless this tensor is of `dtype`.
    pub fn expect_dtype(&self, what: &str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DTypeMismatch {
                what: what.into(),
                expected: dtype,
                got: self.dtype,
            });
        }
        Ok(())
    }

    /// `Err(ShapeMismatch)` naming the argument `what` unless this tensor has `shape`.
    pub fn expect_shape(&self, what: &str, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(Error::ShapeMismatch {
                what: what.into(),
                expected: shape.to_vec(),
                got: self.shape.clone(),
            });
        }
        Ok(())
    }
}

/// The element count of `shape`, or `TooLarge` when it overflows.
pub fn checked_numel(what: &str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        n.checked_mul(d).ok_or_else(|| Error::TooLarge {
            what: format!("{what}: elements of shape {shape:?}"),
            value: u64::MAX,
            limit: usize::MAX as u64,
        })
    })
}

/// The bytes of `shape` in `dtype`, or `TooLarge` when they overflow.
pub fn checked_bytes(what: &str, shape: &[usize], dtype: DType) -> Result<u64> {
    let n = checked_numel(what, shape)? as u64;
    n.checked_mul(dtype.size()).ok_or_else(|| Error::TooLarge {
        what: format!("{what}: bytes of shape {shape:?}"),
        value: n,
        limit: u64::MAX / dtype.size(),
    })
}

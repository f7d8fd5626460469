//! Host transfers: tensors made from host data, downloads back to the host, submits and waits.
//! For tests, tools and the convenience `forward` paths; the hot path records into the caller's
//! encoder and never transfers. Downloads come blocking (native) and async (every target: a
//! browser cannot block).

use crate::{Context, DType, Error, Result, Tensor};

impl Context {
    /// Usages of the buffers wgnorm allocates for tensors.
    pub const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// A new uninitialised tensor (its buffer padded to a multiple of 16 bytes, at least 16).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = crate::checked_bytes("tensor", shape, dtype)?;
        let buffer =
            self.create_buffer("wgnorm tensor", padded(bytes), Self::TENSOR_USAGE, false)?;
        Tensor::from_buffer(buffer, 0, shape, dtype)
    }

    fn upload_bytes(&self, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = crate::checked_numel("upload", shape)?;
        if crate::checked_bytes("upload", shape, dtype)? != bytes.len() as u64 {
            return Err(Error::DataLength {
                what: format!("upload of shape {shape:?}"),
                n,
                len: bytes.len() / dtype.size() as usize,
            });
        }
        let buffer = self.create_buffer(
            "wgnorm tensor",
            padded(bytes.len() as u64),
            Self::TENSOR_USAGE,
            true,
        )?;
        // Mapped ranges are 4-byte granular: map the whole (padded) buffer, fill the prefix.
        buffer
            .slice(..)
            .get_mapped_range_mut()
            .map_err(|e| Error::Device(e.to_string()))?
            .slice(..bytes.len())
            .copy_from_slice(bytes);
        buffer.unmap();
        Tensor::from_buffer(buffer, 0, shape, dtype)
    }

    /// Uploads f32 data as a new f32 tensor.
    pub fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload_bytes(bytemuck::cast_slice(data), shape, DType::F32)
    }

    /// Uploads f16 data as a new f16 tensor.
    pub fn upload_f16(&self, data: &[half::f16], shape: &[usize]) -> Result<Tensor> {
        self.upload_bytes(bytemuck::cast_slice(data), shape, DType::F16)
    }

    /// Uploads f32 data, rounding it to `dtype`.
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::{Context, DType};
    ///
    /// // Headless: the default adapter (software Vulkan on a machine without a GPU). An app that
    /// // owns its device wraps it with `Context::from_device(device, queue)` instead.
    /// let ctx = Context::new()?;
    /// let x = ctx.upload(&[1.0, 2.5, -3.0, 4.0], &[2, 2], DType::F16)?;
    /// assert_eq!((x.shape(), x.dtype()), (&[2, 2][..], DType::F16));
    /// assert_eq!(ctx.download(&x)?, vec![1.0, 2.5, -3.0, 4.0]); // exact in f16
    /// // Bad input is a typed error, never a panic.
    /// assert!(ctx.upload_f32(&[1.0, 2.0, 3.0], &[2, 2]).is_err());
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn upload(&self, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => self.upload_f32(data, shape),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                self.upload_f16(&h, shape)
            }
            DType::BF16 => {
                let h: Vec<half::bf16> = data.iter().map(|&v| half::bf16::from_f32(v)).collect();
                self.upload_bytes(bytemuck::cast_slice(&h), shape, DType::BF16)
            }
        }
    }

    /// Records `f` into a new command encoder and submits it, without waiting: the convenience
    /// `forward` paths (an app records into its own encoder instead).
    pub fn record_and_submit(
        &self,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let mut enc = self.device().create_command_encoder(&Default::default());
        f(&mut enc)?;
        self.queue().submit([enc.finish()]);
        Ok(())
    }

    /// Copies a tensor back to the host as f32 (f16 and bf16 widened exactly). Blocks until the
    /// GPU is done with all work submitted so far: for tests and tools, not for a frame loop.
    /// Not on the web, which cannot block: use [`Context::download_async`] there.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.download_async(t))
    }

    /// [`Context::download`] without blocking the thread: on native targets it still waits for
    /// the GPU inside (wgpu delivers the mapping only while polled), in a browser it awaits the
    /// mapping promise.
    pub async fn download_async(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.download_bytes(t).await?;
        Ok(match t.dtype() {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes)
                .into_iter()
                .map(f32::from)
                .collect(),
            DType::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(&bytes)
                .into_iter()
                .map(f32::from)
                .collect(),
        })
    }

    async fn download_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let len = t.byte_len();
        if len == 0 {
            return Ok(Vec::new());
        }
        if !t.buffer().usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::MissingUsage {
                what: "download source".into(),
                missing: wgpu::BufferUsages::COPY_SRC,
            });
        }
        // Copies need 4-byte aligned offsets and sizes: copy the covering aligned range.
        let start = t.offset() & !3;
        let end = (t.offset() + len + 3) & !3;
        if end > t.buffer().size() {
            return Err(Error::BufferTooSmall {
                what: "download (4-byte copy granularity)".into(),
                offset: start,
                end,
                size: t.buffer().size(),
            });
        }
        let staging = self.create_buffer(
            "wgnorm readback",
            end - start,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            false,
        )?;
        let mut enc = self.device().create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(t.buffer(), start, &staging, 0, end - start);
        let index = self.queue().submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        // Native backends run the callback only inside a poll; a browser resolves it itself.
        #[cfg(not(target_arch = "wasm32"))]
        self.wait(Some(index))?;
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        rx.await
            .ok_or_else(|| Error::Poll("the mapping callback was dropped".into()))?
            .map_err(|e| Error::Device(e.to_string()))?;
        let skip = (t.offset() - start) as usize;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Device(e.to_string()))?[skip..skip + len as usize]
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Waits (up to 10 minutes) for a submission, or for all work when `None`.
    pub fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.device()
            .poll(wgpu::PollType::Wait {
                submission_index: index,
                timeout: Some(std::time::Duration::from_secs(600)),
            })
            .map(|_| ())
            .map_err(|e| Error::Poll(e.to_string()))
    }
}

/// Size of a buffer holding `bytes`: at least 16 and a multiple of 16, so vec4 and f16 bindings of
/// its whole range are always valid.
pub(crate) fn padded(bytes: u64) -> u64 {
    bytes.max(16).div_ceil(16) * 16
}

/// A one-value channel whose receiver is a future: the buffer-mapping callback sends, the
/// download awaits (on the web the browser wakes it; natively the value is there after the poll).
mod oneshot {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    struct Slot<T> {
        value: Option<T>,
        waker: Option<Waker>,
        /// The sender was dropped without sending.
        closed: bool,
    }

    pub struct Sender<T>(Arc<Mutex<Slot<T>>>);
    pub struct Receiver<T>(Arc<Mutex<Slot<T>>>);

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
            closed: false,
        }));
        (Sender(slot.clone()), Receiver(slot))
    }

    fn lock<T>(m: &Mutex<Slot<T>>) -> std::sync::MutexGuard<'_, Slot<T>> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl<T> Sender<T> {
        pub fn send(self, value: T) {
            let waker = {
                let mut s = lock(&self.0);
                s.value = Some(value);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let waker = {
                let mut s = lock(&self.0);
                s.closed = true;
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Resolves to the value, or `None` when the sender was dropped without one.
    impl<T> Future for Receiver<T> {
        type Output = Option<T>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let mut s = lock(&self.0);
            if let Some(v) = s.value.take() {
                return Poll::Ready(Some(v));
            }
            if s.closed {
                return Poll::Ready(None);
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

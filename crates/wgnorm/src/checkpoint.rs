//! Norm parameters loaded by name from safetensors checkpoints (Hugging Face / PyTorch
//! `state_dict` naming: `model.layers.3.input_layernorm.weight`, `bn1.running_mean`, ...).
//!
//! The file is memory-mapped, not read into memory: each tensor is converted from its stored
//! dtype (f32, f16 or bf16; BatchNorm's `num_batches_tracked` as i64) straight into the upload
//! in the dtype the op takes (the storage type for row norms, f32 for the batch family). Every check names the tensor it is about.
//!
//! ```
//! use wgnorm::checkpoint::Checkpoint;
//! use wgnorm::prelude::*;
//!
//! // A checkpoint with one RMSNorm weight, stored in bf16 as most LLM checkpoints are.
//! let w: Vec<u8> = [1.0f32, 2.0, 0.5, 1.0]
//!     .iter()
//!     .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
//!     .collect();
//! let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![4], &w)
//!     .unwrap();
//! let bytes = safetensors::serialize([("model.norm.weight", view)], None).unwrap();
//!
//! let ctx = Context::new()?;
//! let ckpt = Checkpoint::from_bytes(bytes)?;
//! let (rms, params) = ckpt.rms_norm(&ctx, "model.norm", RmsNormConfig::default())?;
//! assert_eq!(ctx.download(params.weight.as_ref().unwrap())?, vec![1.0, 2.0, 0.5, 1.0]);
//! let x = ctx.upload_f32(&[1.0; 8], &[2, 4])?;
//! let out = rms.forward(&RmsNormInputs { x: &x, weight: params.weight.as_ref() })?;
//! assert!((ctx.download(&out.y)?[1] - 2.0).abs() < 1e-4);
//! # Ok::<(), wgnorm::Error>(())
//! ```

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::rmsnorm::{QkNormRope, QkNormRopeConfig};
use crate::{
    BatchNorm, BatchNormConfig, Context, DType, Error, GroupNorm, GroupNormConfig, InstanceNorm,
    InstanceNormConfig, LayerNorm, LayerNormConfig, Result, RmsNorm, RmsNormConfig, Tensor,
};

/// The bytes of a checkpoint: a memory map of a file, or owned bytes.
enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A safetensors checkpoint that layers load their parameters from, by name.
pub struct Checkpoint {
    bytes: Bytes,
    /// Shown in errors.
    origin: String,
}

/// The parameters of one norm layer found under a prefix (each absent when the checkpoint has
/// no tensor of that name). All are 1-D with one value per normalized channel / feature.
#[derive(Debug, Default)]
pub struct NormParams {
    /// `prefix.weight` (gamma), in the dtype the op takes: the storage type for the row norms,
    /// f32 for the batch-statistics family.
    pub weight: Option<Tensor>,
    /// `prefix.bias` (beta), like `weight`.
    pub bias: Option<Tensor>,
    /// `prefix.running_mean`, f32 (BatchNorm).
    pub running_mean: Option<Tensor>,
    /// `prefix.running_var`, f32 (BatchNorm).
    pub running_var: Option<Tensor>,
    /// `prefix.num_batches_tracked` (BatchNorm; PyTorch stores it as an i64 scalar).
    pub num_batches_tracked: Option<i64>,
    /// Channels (the length every tensor above has).
    pub channels: usize,
}

fn bad(name: &str, why: impl Into<String>) -> Error {
    Error::Checkpoint {
        name: name.to_string(),
        why: why.into(),
    }
}

impl Checkpoint {
    /// Memory-maps the safetensors file at `path` (the file must not be modified while the
    /// checkpoint is open) and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        #[cfg(not(target_arch = "wasm32"))]
        let bytes = {
            let file = std::fs::File::open(path).map_err(|e| bad(&origin, e.to_string()))?;
            // SAFETY: the map is read-only and lives as long as the checkpoint; like every reader
            // of memory-mapped files, we rely on the file not being truncated while it is mapped.
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(&origin, e.to_string()))?;
            Bytes::Mapped(map)
        };
        // No memory maps on the web (nor files, mostly): read what the platform can.
        #[cfg(target_arch = "wasm32")]
        let bytes = Bytes::Owned(std::fs::read(path).map_err(|e| bad(&origin, e.to_string()))?);
        let ckpt = Checkpoint { bytes, origin };
        ckpt.parsed()?;
        Ok(ckpt)
    }

    /// A checkpoint held in memory (written by the app, or downloaded), header checked.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Checkpoint> {
        let ckpt = Checkpoint {
            bytes: Bytes::Owned(bytes),
            origin: "<bytes>".into(),
        };
        ckpt.parsed()?;
        Ok(ckpt)
    }

    fn data(&self) -> &[u8] {
        match &self.bytes {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// The parsed header (cheap: the tensors stay where they are).
    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(self.data())
            .map_err(|e| bad(&self.origin, format!("not a safetensors file: {e}")))
    }

    /// Every tensor name in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        let st = self.parsed()?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        Ok(names)
    }

    /// Tensor `name` as f32 values and its shape; `None` when the file has no such tensor.
    /// f32, f16 and bf16 are converted; other dtypes are an error naming the tensor.
    pub fn values(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let st = self.parsed()?;
        let Ok(view) = st.tensor(name) else {
            return Ok(None);
        };
        let values = match crate::conformance::widen(&view) {
            Some(("F32" | "F16" | "BF16", v)) => v,
            _ => {
                return Err(bad(
                    name,
                    format!(
                        "stored as {:?}; norm parameters load from f32, f16 or bf16",
                        view.dtype()
                    ),
                ))
            }
        };
        Ok(Some((values, view.shape().to_vec())))
    }

    /// A 1-D tensor of `channels` values (when given) uploaded as `dtype`, or `None` if absent.
    fn vector(
        &self,
        ctx: &Context,
        name: &str,
        channels: &mut Option<usize>,
        dtype: DType,
    ) -> Result<Option<Tensor>> {
        let Some((values, shape)) = self.values(name)? else {
            return Ok(None);
        };
        if shape.len() != 1 {
            return Err(bad(
                name,
                format!("shape {shape:?}: a norm parameter is 1-D"),
            ));
        }
        match *channels {
            Some(c) if c != shape[0] => {
                return Err(bad(
                    name,
                    format!("{} values where the layer has {c} channels", shape[0]),
                ))
            }
            _ => *channels = Some(shape[0]),
        }
        ctx.upload(&values, &shape, dtype).map(Some)
    }

    /// Whatever of `weight`, `bias`, `running_mean`, `running_var` and `num_batches_tracked`
    /// exists under `prefix` (`prefix.weight`, ...), checked to be 1-D and of one length
    /// (`channels` when given). weight and bias are uploaded as `dtype`, the running statistics
    /// as f32. No tensor at all under the prefix is an error naming the names looked for.
    pub fn norm_params(
        &self,
        ctx: &Context,
        prefix: &str,
        channels: Option<usize>,
        dtype: DType,
    ) -> Result<NormParams> {
        let name = |leaf: &str| format!("{prefix}.{leaf}");
        let mut c = channels;
        let weight = self.vector(ctx, &name("weight"), &mut c, dtype)?;
        let bias = self.vector(ctx, &name("bias"), &mut c, dtype)?;
        let running_mean = self.vector(ctx, &name("running_mean"), &mut c, DType::F32)?;
        let running_var = self.vector(ctx, &name("running_var"), &mut c, DType::F32)?;
        let num_batches_tracked = self.count(&name("num_batches_tracked"))?;
        let Some(channels) = c else {
            return Err(bad(
                &name("weight"),
                format!(
                    "not in {}: none of {prefix}.{{weight, bias, running_mean, running_var}} is",
                    self.origin
                ),
            ));
        };
        Ok(NormParams {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            channels,
        })
    }

    /// An integer scalar (i64 or i32), such as `num_batches_tracked`.
    fn count(&self, name: &str) -> Result<Option<i64>> {
        let st = self.parsed()?;
        let Ok(view) = st.tensor(name) else {
            return Ok(None);
        };
        let d = view.data();
        match (view.dtype(), d.len()) {
            (Dtype::I64, 8) => Ok(Some(i64::from_le_bytes(d.try_into().unwrap()))),
            (Dtype::I32, 4) => Ok(Some(i32::from_le_bytes(d.try_into().unwrap()) as i64)),
            (dt, _) => Err(bad(
                name,
                format!("{dt:?} of {} bytes: expected an i64 or i32 scalar", d.len()),
            )),
        }
    }

    /// A LayerNorm and its `weight` (required) and `bias` (optional) under `prefix`.
    pub fn layer_norm(
        &self,
        ctx: &Context,
        prefix: &str,
        cfg: LayerNormConfig,
    ) -> Result<(LayerNorm, NormParams)> {
        let p = self.norm_params(ctx, prefix, None, cfg.dtype)?;
        require(&p.weight, prefix, "weight")?;
        Ok((LayerNorm::new(ctx, cfg)?, p))
    }

    /// An RMSNorm and its `weight` under `prefix` (a bias there is an error: RMSNorm has none).
    pub fn rms_norm(
        &self,
        ctx: &Context,
        prefix: &str,
        cfg: RmsNormConfig,
    ) -> Result<(RmsNorm, NormParams)> {
        let p = self.norm_params(ctx, prefix, None, cfg.dtype)?;
        require(&p.weight, prefix, "weight")?;
        if p.bias.is_some() {
            return Err(bad(
                &format!("{prefix}.bias"),
                "RMSNorm has no bias: is this a LayerNorm?",
            ));
        }
        Ok((RmsNorm::new(ctx, cfg)?, p))
    }

    /// Per-head QK-norm (+ RoPE) and its `weight` (`head_dim` values) under `prefix`, e.g.
    /// `model.layers.0.self_attn.q_norm` (a bias there is an error, as for RMSNorm).
    pub fn qk_norm_rope(
        &self,
        ctx: &Context,
        prefix: &str,
        cfg: QkNormRopeConfig,
    ) -> Result<(QkNormRope, NormParams)> {
        let p = self.norm_params(ctx, prefix, None, cfg.dtype)?;
        require(&p.weight, prefix, "weight")?;
        if p.bias.is_some() {
            return Err(bad(&format!("{prefix}.bias"), "QK-norm has no bias"));
        }
        Ok((QkNormRope::new(ctx, cfg)?, p))
    }

    /// An InstanceNorm and its optional affine parameters and running statistics (PyTorch's
    /// `affine` and `track_running_stats` layers) under `prefix`, all f32.
    pub fn instance_norm(
        &self,
        ctx: &Context,
        prefix: &str,
        cfg: InstanceNormConfig,
    ) -> Result<(InstanceNorm, NormParams)> {
        let p = self.norm_params(ctx, prefix, None, DType::F32)?;
        Ok((InstanceNorm::new(ctx, cfg)?, p))
    }

    /// A GroupNorm of `cfg.num_groups` groups and its affine parameters under `prefix`
    /// (channels divisible by the groups).
    pub fn group_norm(
        &self,
        ctx: &Context,
        prefix: &str,
        cfg: GroupNormConfig,
    ) -> Result<(GroupNorm, NormParams)> {
        // The batch-statistics family takes f32 affine parameters whatever x's storage type.
        let p = self.norm_params(ctx, prefix, None, DType::F32)?;
        if cfg.num_groups == 0 || !p.channels.is_multiple_of(cfg.num_groups) {
            return Err(bad(
                &format!("{prefix}.weight"),
                format!("{} channels in {} groups", p.channels, cfg.num_groups),
            ));
        }
        Ok((GroupNorm::new(ctx, cfg)?, p))
    }

    /// A BatchNorm and its running statistics (required: what inference uses) and affine
    /// parameters (optional: `affine=False` layers have none) under `prefix`.
    pub fn batch_norm(
        &self,
        ctx: &Context,
        prefix: &str,
        cfg: BatchNormConfig,
    ) -> Result<(BatchNorm, NormParams)> {
        let p = self.norm_params(ctx, prefix, None, DType::F32)?;
        require(&p.running_mean, prefix, "running_mean")?;
        require(&p.running_var, prefix, "running_var")?;
        Ok((BatchNorm::new(ctx, cfg)?, p))
    }
}

fn require(t: &Option<Tensor>, prefix: &str, leaf: &str) -> Result<()> {
    match t {
        Some(_) => Ok(()),
        None => Err(bad(
            &format!("{prefix}.{leaf}"),
            "missing from the checkpoint",
        )),
    }
}

//! `Tensor<T>`: a GPU storage buffer plus a row-major shape.

use std::marker::PhantomData;

use wgpu::util::DeviceExt;

use crate::{Context, DType, Element, Error, Result};

/// A row-major tensor in one GPU storage buffer. f16 buffers are padded to a multiple of 4 bytes.
pub struct Tensor<T: Element> {
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
    /// [`Context::id`] of the context whose device made (or wrapped) the buffer.
    context: u64,
    _t: PhantomData<T>,
}

impl<T: Element> Clone for Tensor<T> {
    /// Another handle to the same buffer (no copy).
    fn clone(&self) -> Self {
        Self {
            buffer: self.buffer.clone(),
            shape: self.shape.clone(),
            context: self.context,
            _t: PhantomData,
        }
    }
}

/// The element count of `shape`, or [`Error::ShapeOverflow`] when it does not fit a `usize` (or
/// its bytes a `u64`).
pub(crate) fn checked_len(shape: &[usize], elem_bytes: usize) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|n| n.checked_mul(elem_bytes).is_some())
        .ok_or_else(|| Error::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

pub(crate) fn padded_bytes(len: usize, elem: usize) -> u64 {
    (((len * elem) as u64).div_ceil(4) * 4).max(4)
}

impl<T: Element> Tensor<T> {
    /// Uploads `data` (row-major) with the given shape.
    pub fn from_slice(ctx: &Context, data: &[T], shape: &[usize]) -> Result<Self> {
        let n = checked_len(shape, size_of::<T>())?;
        if n != data.len() {
            return Err(Error::DataLength {
                shape: shape.to_vec(),
                expected: n,
                got: data.len(),
            });
        }
        let mut bytes = bytemuck::cast_slice::<T, u8>(data).to_vec();
        bytes.resize(padded_bytes(n, size_of::<T>()) as usize, 0);
        check_buffer_size(ctx, bytes.len() as u64)?;
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("longseq tensor"),
                contents: &bytes,
                usage: usage(),
            });
        Ok(Self {
            buffer,
            shape: shape.to_vec(),
            context: ctx.id(),
            _t: PhantomData,
        })
    }

    /// A tensor whose every element is NaN: what tests write into, so an unwritten element shows.
    pub fn nan(ctx: &Context, shape: &[usize]) -> Result<Self> {
        let n = checked_len(shape, size_of::<T>())?;
        Self::from_slice(ctx, &vec![T::from_f64(f64::NAN); n], shape)
    }

    /// An uninitialised (zero-filled by wgpu) tensor for op outputs.
    pub fn empty(ctx: &Context, shape: &[usize]) -> Result<Self> {
        let n = checked_len(shape, size_of::<T>())?;
        let size = padded_bytes(n, size_of::<T>());
        check_buffer_size(ctx, size)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("longseq tensor"),
            size,
            usage: usage(),
            mapped_at_creation: false,
        });
        Ok(Self {
            buffer,
            shape: shape.to_vec(),
            context: ctx.id(),
            _t: PhantomData,
        })
    }

    /// The shape, outermost dim first (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The storage dtype.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }
    /// The wgpu buffer that holds the elements.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    pub(crate) fn context_id(&self) -> u64 {
        self.context
    }

    /// Wraps an application's own buffer (made on `ctx`'s device) as a tensor of `shape`, without
    /// a copy. The buffer needs `STORAGE` usage (and `COPY_SRC` for [`Tensor::to_vec`]), and at
    /// least the shape's bytes rounded up to a word. Errors: [`Error::ShapeOverflow`],
    /// [`Error::InvalidArgument`] for a missing usage or a buffer too small for the shape.
    pub fn from_buffer(ctx: &Context, buffer: wgpu::Buffer, shape: &[usize]) -> Result<Self> {
        let n = checked_len(shape, size_of::<T>())?;
        let bad = |reason: String| Error::InvalidArgument {
            op: "Tensor::from_buffer",
            name: "buffer",
            reason,
        };
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(bad(format!("usage {:?} lacks STORAGE", buffer.usage())));
        }
        let need = padded_bytes(n, size_of::<T>());
        if buffer.size() < need {
            return Err(bad(format!(
                "{} bytes, but shape {shape:?} of {} needs {need}",
                buffer.size(),
                T::DTYPE
            )));
        }
        Ok(Self {
            buffer,
            shape: shape.to_vec(),
            context: ctx.id(),
            _t: PhantomData,
        })
    }

    /// Copies the tensor back to the host, blocking until the device is done. Not on wasm32,
    /// where nothing may block: use [`Tensor::to_vec_async`] there.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec(&self, ctx: &Context) -> Result<Vec<T>> {
        pollster::block_on(self.to_vec_async(ctx))
    }

    /// Copies the tensor back to the host. On native backends this polls the device itself; on
    /// the web the browser drives the map.
    pub async fn to_vec_async(&self, ctx: &Context) -> Result<Vec<T>> {
        if ctx.id() != self.context {
            return Err(Error::WrongContext {
                op: "to_vec",
                name: "tensor",
            });
        }
        let size = self.buffer.size();
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("longseq readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        enc.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, size);
        ctx.queue.submit([enc.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        ctx.wait()?;
        rx.await
            .map_err(|_| Error::Device {
                message: "readback callback dropped".into(),
                source: None,
            })?
            .map_err(Error::device)?;
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(Error::device)?;
            let n = self.len();
            bytemuck::pod_collect_to_vec::<u8, T>(&view[..n * size_of::<T>()])
        };
        staging.unmap();
        Ok(out)
    }
}

fn usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

fn check_buffer_size(ctx: &Context, size: u64) -> Result<()> {
    let limit = ctx.limits().max_buffer_size;
    if size > limit {
        return Err(Error::TooLarge {
            op: "tensor",
            what: "the tensor's buffer".into(),
            needed: size,
            limit,
        });
    }
    Ok(())
}

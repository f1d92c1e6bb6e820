//! Binding helpers: buffer ranges bound at a slot, internal scratch and parameter buffers.

use wgpu::util::DeviceExt;

use crate::{Context, Element, Error, Result, Tensor};

/// A range of a buffer bound at one binding slot.
#[derive(Clone, Copy)]
pub(crate) struct Bind<'b> {
    pub slot: u32,
    pub buffer: &'b wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'b> Bind<'b> {
    /// The whole of `buffer` at `slot` (internal buffers, sized by the op itself).
    pub fn all(slot: u32, buffer: &'b wgpu::Buffer) -> Self {
        Self {
            slot,
            buffer,
            offset: 0,
            size: buffer.size(),
        }
    }

    /// The first `bytes` of `buffer` (rounded up to a word, at least one) at `slot`.
    pub fn prefix(slot: u32, buffer: &'b wgpu::Buffer, bytes: u64) -> Self {
        Self {
            slot,
            buffer,
            offset: 0,
            size: bytes.div_ceil(4).max(1) * 4,
        }
    }

    /// [`Bind::prefix`] with element offset 0, in the form [`Bind::elems`] returns.
    pub fn prefix_at(slot: u32, buffer: &'b wgpu::Buffer, bytes: u64) -> (Self, u32) {
        (Self::prefix(slot, buffer, bytes), 0)
    }

    /// Elements `[first, first + n)` of a buffer of `elem_bytes`-sized elements. The offset is
    /// aligned down to the device's storage-offset alignment; the returned element index is where
    /// `first` lands inside the binding (the shader adds it to its indices).
    pub fn elems(
        ctx: &Context,
        slot: u32,
        buffer: &'b wgpu::Buffer,
        elem_bytes: u64,
        first: u64,
        n: u64,
    ) -> (Self, u32) {
        let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
        let start = first * elem_bytes;
        let offset = start / align * align;
        let end = ((first + n) * elem_bytes).div_ceil(4) * 4;
        let end = end.min(buffer.size()).max(offset + 4);
        let bind = Self {
            slot,
            buffer,
            offset,
            size: end - offset,
        };
        (bind, ((start - offset) / elem_bytes) as u32)
    }
}

/// An internal buffer for an op's intermediate results (f32 state, f32 staging of packed f16).
pub(crate) fn scratch(ctx: &Context, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("longseq scratch"),
        size: bytes.div_ceil(4).max(1) * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

pub(crate) fn upload_f32(ctx: &Context, x: &[f32]) -> wgpu::Buffer {
    let mut x = x.to_vec();
    if x.is_empty() {
        x.push(0.0);
    }
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("longseq f32 parameters"),
            contents: bytemuck::cast_slice(&x),
            usage: wgpu::BufferUsages::STORAGE,
        })
}

/// A whole tensor bound at `slot`, or [`Error::TooLarge`] past the storage-binding limit.
pub(crate) fn bind_whole<'b, T: Element>(
    ctx: &Context,
    op: &'static str,
    name: &str,
    slot: u32,
    t: &'b Tensor<T>,
) -> Result<Bind<'b>> {
    bind_buffer(ctx, op, name, slot, t.buffer())
}

pub(crate) fn bind_buffer<'b>(
    ctx: &Context,
    op: &'static str,
    name: &str,
    slot: u32,
    buffer: &'b wgpu::Buffer,
) -> Result<Bind<'b>> {
    let limit = ctx.limits().max_storage_buffer_binding_size;
    if buffer.size() > limit {
        return Err(Error::TooLarge {
            op,
            what: format!("`{name}`"),
            needed: buffer.size(),
            limit,
        });
    }
    Ok(Bind {
        slot,
        buffer,
        offset: 0,
        size: buffer.size(),
    })
}

/// A read-only storage buffer holding `x` (one zero word when empty: bindings cannot be empty).
pub(crate) fn upload_u32(ctx: &Context, x: &[u32]) -> wgpu::Buffer {
    let x = if x.is_empty() { &[0u32][..] } else { x };
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("longseq u32 parameters"),
            contents: bytemuck::cast_slice(x),
            usage: wgpu::BufferUsages::STORAGE,
        })
}

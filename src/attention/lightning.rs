//! Lightning attention: causal linear attention with a per-head exponential decay, computed
//! block-wise (Qin et al. 2024, *Lightning Attention-2*, arXiv 2401.04658; TransNormerLLM,
//! arXiv 2307.14995):
//!
//! `o_t = q_t Σ_{j≤t} λ_h^(t−j) k_jᵀ v_j`, `λ_h = exp(−s_h)`,
//!
//! in blocks of B rows: a masked, decayed product inside the block plus the state of all earlier
//! blocks, `KV ← λ^B KV + Σ_j λ^(B−1−j) k_jᵀ v_j`. Only non-negative powers of λ are ever formed,
//! so strong decays (s = 2, B = 64) underflow harmlessly instead of overflowing. Cost O(L·B·D).

use wgpu::util::DeviceExt;

use super::linear::{check_shapes, AttnDims};
use super::softmax::{check_out, row_bytes, OutSlot};
use super::{chunk, FeatureMap};
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

/// Options for [`lightning_attention`] and the CPU reference
/// [`crate::reference::attention::lightning_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LightningOptions {
    /// Rows per block; `None` picks the largest of 64, 32, 16, 8 whose B×B score tile fits the
    /// device's workgroup memory. Any B ≥ 1 that fits is valid; the result does not depend on it.
    pub block: Option<u32>,
    /// φ applied to q and k inside the kernel. The papers apply their activation outside, so the
    /// default is [`FeatureMap::Identity`].
    pub feature_map: FeatureMap,
}

impl Default for LightningOptions {
    fn default() -> Self {
        Self {
            block: None,
            feature_map: FeatureMap::Identity,
        }
    }
}

/// ALiBi slopes (Press et al. 2022), TransNormerLLM's default decay rates: `s_h = 2^(−8(h+1)/H)`
/// for H a power of two; otherwise the slopes of the nearest power of two below H followed by
/// every other slope of twice that many, as in the ALiBi reference code.
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        (1..=n)
            .map(|h| 2f64.powf(-8.0 * h as f64 / n as f64))
            .collect()
    }
    if heads == 0 {
        return vec![];
    }
    let p = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    let mut s = pow2(p);
    if p < heads {
        s.extend(pow2(2 * p).into_iter().step_by(2).take(heads - p));
    }
    s.into_iter().map(|x| x as f32).collect()
}

/// Heads of a `[H, L, D]` or `[B, H, L, D]` shape.
pub(crate) fn heads_of(shape: &[usize]) -> usize {
    shape[shape.len() - 3]
}

pub(crate) fn max_block(ctx: &Context) -> u32 {
    chunk::max_chunk(ctx)
}

/// The block size to use, or [`Error::InvalidArgument`].
pub(crate) fn resolve_block(ctx: &Context, op: &'static str, block: Option<u32>) -> Result<u32> {
    let max = max_block(ctx);
    match block {
        None => Ok(chunk::default_chunk(ctx).min(max)),
        Some(b) if b >= 1 && b <= max => Ok(b),
        Some(b) => Err(Error::InvalidArgument {
            op,
            name: "block",
            reason: format!("{b} is not in 1..={max} (the B×B tile must fit workgroup memory)"),
        }),
    }
}

/// Checks `slopes: [H]`, each finite and ≥ 0, or builds the ALiBi ones.
pub(crate) fn resolve_slopes(
    op: &'static str,
    heads: usize,
    slopes: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let Some(s) = slopes else {
        return Ok(alibi_slopes(heads));
    };
    if s.len() != heads {
        return Err(Error::Shape {
            op,
            name: "slopes",
            expected: format!("[{heads}] (one per head)"),
            got: vec![s.len()],
        });
    }
    if let Some(x) = s.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(Error::InvalidArgument {
            op,
            name: "slopes",
            reason: format!("{x} is not a finite decay rate >= 0"),
        });
    }
    Ok(s.to_vec())
}

/// One pass of the decayed kernel (shared with NormAttention, which has no decay).
pub(crate) struct Decayed<'b> {
    pub feature_map: FeatureMap,
    pub causal: bool,
    pub block: u32,
    /// `[H]` f32 decay rates on the device.
    pub slopes: &'b wgpu::Buffer,
    pub heads: u32,
    /// Apply the slopes (false: λ = 1 and `slopes` is unused).
    pub decay: bool,
}

impl Decayed<'_> {
    fn job(&self, storage: Storage, d: &AttnDims) -> chunk::Job {
        chunk::Job {
            storage,
            fmap: self.feature_map.shader_id(),
            causal: self.causal,
            denominator: false,
            eps: 0.0,
            chunk: Some(self.block),
            len: d.len as u64,
            dk: d.dk as u64,
            dv: d.dv as u64,
        }
    }
    fn decay(&self) -> Option<chunk::Decay<'_>> {
        self.decay.then_some(chunk::Decay {
            slopes: self.slopes,
            heads: self.heads,
        })
    }
}

/// Records the chunk engine over rows `[r0, r0 + nr)` into `out`.
pub(crate) fn record_decayed_rows<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    (r0, nr): (u64, u64),
    cfg: &Decayed<'_>,
    storage: Storage,
    out: OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let es = size_of::<T>() as u64;
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let b = chunk::PassBinds {
        q: Bind::elems(ctx, 1, q.buffer(), es, r0 * len * dk, nr * len * dk),
        k: Bind::elems(ctx, 2, k.buffer(), es, r0 * len * dk, nr * len * dk),
        v: Bind::elems(ctx, 3, v.buffer(), es, r0 * len * dv, nr * len * dv),
        o: Bind::elems(
            ctx,
            11,
            out.buffer,
            out.elem_bytes,
            out.first,
            nr * len * dv,
        ),
        totals: None,
    };
    chunk::record_rows(s, &cfg.job(storage, d), cfg.decay(), (r0, nr), &b)
}

/// Rows per pass for the decayed kernel: inputs, output and the engine's scratch must fit.
pub(crate) fn decayed_rows_per_pass(
    ctx: &Context,
    op: &'static str,
    d: &AttnDims,
    block: u32,
    in_bytes: u64,
    out_bytes: u64,
) -> Result<u64> {
    let mut rb = row_bytes(d, in_bytes, out_bytes);
    let cfg = Decayed {
        feature_map: FeatureMap::Identity,
        causal: true,
        block,
        slopes: &upload_f32(ctx, &[0.0]),
        heads: 1,
        decay: false,
    };
    rb.extend(chunk::row_bytes(ctx, &cfg.job(Storage::F32, d)));
    Ok(rows_per_pass(ctx, op, &rb, d.rows)? as u64)
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

const OP: &str = "lightning_attention";

/// Lightning attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` ->
/// `o: [.., L, Dv]` in the inputs' dtype, causal, no denominator (TransNormerLLM normalises the
/// output afterwards). `slopes: [H]` decay rates `s_h ≥ 0` (λ_h = exp(−s_h)); `None` uses
/// [`alibi_slopes`]. f16 tensors are stored as f16; state and arithmetic are f32.
///
/// Errors: [`Error::Shape`] (mismatched q/k/v, slopes not of length H), [`Error::InvalidArgument`]
/// (a slope negative or not finite, a block outside `1..=max`), [`Error::TooLarge`].
pub fn lightning_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    opts: &LightningOptions,
) -> Result<Tensor<T>> {
    let dims = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    lightning_attention_into(ctx, q, k, v, slopes, &out, opts)?;
    Ok(out)
}

/// [`lightning_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn lightning_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    out: &Tensor<T>,
    opts: &LightningOptions,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_lightning_attention(&mut s, q, k, v, slopes, out, opts)?;
        s.submit();
        Ok(())
    })
}

/// Records Lightning attention into a [`Schedule`].
pub fn record_lightning_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    out: &Tensor<T>,
    opts: &LightningOptions,
) -> Result<()> {
    let ctx = s.context();
    let d = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    check_out(OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    let heads = heads_of(q.shape());
    let sl = resolve_slopes(OP, heads, slopes)?;
    let block = resolve_block(ctx, OP, opts.block)?;
    let slopes_buf = upload_f32(ctx, &sl);
    let cfg = Decayed {
        feature_map: opts.feature_map,
        causal: true,
        block,
        slopes: &slopes_buf,
        heads: heads as u32,
        decay: true,
    };
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let io = chunk::Io {
        q: q.buffer(),
        k: k.buffer(),
        v: v.buffer(),
        in_bytes: size_of::<T>() as u64,
        out: out.buffer(),
        totals: None,
    };
    chunk::record(
        s,
        OP,
        &cfg.job(storage, &d),
        cfg.decay(),
        d.rows as u64,
        &io,
    )
}

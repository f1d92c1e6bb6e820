//! Kernelized linear attention on the GPU (Katharopoulos et al. 2020, *Transformers are RNNs*,
//! arXiv 2006.16236, eqs. 4-6 and 16-20).
//!
//! Non-causal: `O_i = φ(Q_i)ᵀ S / (φ(Q_i)ᵀ z + ε)` with `S = Σ_j φ(K_j) V_jᵀ`, `z = Σ_j φ(K_j)`.
//! Causal: the sums run over `j ≤ i`, computed in the chunked parallel form: per chunk of rows,
//! a masked intra-chunk product plus the prefix state of all earlier chunks, so the work is
//! spread over L rather than one sequential loop per head. Any L; the last chunk is ragged.
//! The same chunk kernels serve precomputed features (Performer, [`super::favor`]) and the
//! prefill of recurrent decoding ([`super::recurrent`]).

use super::{chunk, FeatureMap};
use crate::pipeline::Storage;
use crate::schedule::{Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

/// Options for [`linear_attention`] and the CPU reference
/// [`crate::reference::attention::linear_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearAttentionOptions {
    /// φ, applied to Q and K.
    pub feature_map: FeatureMap,
    /// Sum over `j ≤ i` only.
    pub causal: bool,
    /// Added to the denominator (default 1e-6). Denominator guard: a row whose denominator is
    /// exactly 0 (ε = 0 and every weight `φ(q_i)·φ(k_j)` 0, e.g. relu of a query ≤ 0, or
    /// features that underflow) outputs 0, never 0/0 = NaN; the CPU reference does the same.
    pub eps: f32,
    /// Divide by `φ(Q_i)ᵀ z + ε` (default true). Off, the output is the numerator alone.
    pub denominator: bool,
}

impl Default for LinearAttentionOptions {
    fn default() -> Self {
        Self {
            feature_map: FeatureMap::Elu1,
            causal: false,
            eps: 1e-6,
            denominator: true,
        }
    }
}

/// Sizes of one attention call: `rows` = product of the leading dims (B·H).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub rows: usize,
    pub len: usize,
    pub dk: usize,
    pub dv: usize,
    /// Shape of the output: q's leading dims, then [L, Dv].
    pub out_shape: Vec<usize>,
}

/// Checks `q, k: [.., L, Dk]`, `v: [.., L, Dv]` (rank 3 `[H, L, D]` or 4 `[B, H, L, D]`) and
/// returns the sizes. Every dim must be at least 1.
pub fn check_shapes(op: &'static str, q: &[usize], k: &[usize], v: &[usize]) -> Result<AttnDims> {
    if !(q.len() == 3 || q.len() == 4) {
        return Err(Error::Shape {
            op,
            name: "q",
            expected: "[H, L, Dk] or [B, H, L, Dk]".into(),
            got: q.to_vec(),
        });
    }
    if q.contains(&0) {
        return Err(Error::Shape {
            op,
            name: "q",
            expected: "every dim >= 1".into(),
            got: q.to_vec(),
        });
    }
    if k != q {
        return Err(Error::Shape {
            op,
            name: "k",
            expected: format!("{q:?} (the shape of q)"),
            got: k.to_vec(),
        });
    }
    let r = q.len();
    if v.len() != r || v[..r - 1] != q[..r - 1] || v[r - 1] == 0 {
        return Err(Error::Shape {
            op,
            name: "v",
            expected: format!("{:?} + [Dv >= 1] (q's leading dims and L)", &q[..r - 1]),
            got: v.to_vec(),
        });
    }
    let mut out_shape = q.to_vec();
    out_shape[r - 1] = v[r - 1];
    Ok(AttnDims {
        rows: q[..r - 2].iter().product(),
        len: q[r - 2],
        dk: q[r - 1],
        dv: v[r - 1],
        out_shape,
    })
}

pub(crate) fn check_options(op: &'static str, opts: &LinearAttentionOptions) -> Result<()> {
    if !(opts.eps.is_finite() && opts.eps >= 0.0) {
        return Err(Error::InvalidArgument {
            op,
            name: "eps",
            reason: format!("{} is not a finite number >= 0", opts.eps),
        });
    }
    Ok(())
}

pub(crate) fn workgroup_size(ctx: &Context) -> u32 {
    256.min(ctx.limits().max_compute_invocations_per_workgroup)
        .min(ctx.limits().max_compute_workgroup_size_x)
}

const OP: &str = "linear_attention";

/// Linear attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` -> `o: [.., L, Dv]`
/// in the inputs' dtype. f16 tensors are stored as f16; all arithmetic and state is f32.
///
/// NaN in an input reaches exactly the outputs that depend on it. Errors: [`Error::Shape`] for
/// mismatched shapes, [`Error::InvalidArgument`] for a bad ε, [`Error::TooLarge`] when one
/// (batch, head) row does not fit a storage binding.
pub fn linear_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<Tensor<T>> {
    let dims = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    linear_attention_into(ctx, q, k, v, &out, opts)?;
    Ok(out)
}

/// [`linear_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn linear_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_linear_attention(&mut s, q, k, v, out, opts)?;
        s.submit();
        Ok(())
    })
}

/// Records linear attention into a [`Schedule`] (for chaining ops in one submission).
pub fn record_linear_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<()> {
    record_linear(s, q, k, v, out, opts, None)
}

/// The linear-attention passes; with `state` = (S `[R, Dk, Dv]`, z `[R, Dk]`) f32 buffers, also
/// each row's sums over all L (the decoding state after a causal prefill).
pub(crate) fn record_linear<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &LinearAttentionOptions,
    state: Option<(&wgpu::Buffer, &wgpu::Buffer)>,
) -> Result<()> {
    let ctx = s.context();
    let d = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    check_options(OP, opts)?;
    super::softmax::check_out(OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    let job = chunk::Job {
        storage: Storage::for_dtype(ctx, T::DTYPE),
        fmap: opts.feature_map.shader_id(),
        causal: opts.causal,
        denominator: opts.denominator,
        eps: opts.eps,
        chunk: None,
        len: d.len as u64,
        dk: d.dk as u64,
        dv: d.dv as u64,
    };
    let io = chunk::Io {
        q: q.buffer(),
        k: k.buffer(),
        v: v.buffer(),
        in_bytes: size_of::<T>() as u64,
        out: out.buffer(),
        totals: state,
    };
    chunk::record(s, OP, &job, None, d.rows as u64, &io)
}

/// A binding of the first `bytes` of a whole internal buffer, at element offset 0.
pub(crate) fn whole(slot: u32, buffer: &wgpu::Buffer, bytes: u64) -> (Bind<'_>, u32) {
    let size = bytes.div_ceil(4).max(1) * 4;
    (
        Bind {
            slot,
            buffer,
            offset: 0,
            size,
        },
        0,
    )
}

/// Sizes and flags of one run of the chunk engine over precomputed f32 features (per pass of rows).
pub(crate) struct Core {
    pub len: u64,
    /// Feature dim (Dk for elementwise maps, m' for precomputed features).
    pub dk: u64,
    pub dv: u64,
    pub causal: bool,
    pub denominator: bool,
    pub eps: f32,
}

/// Bindings of one pass of the chunk engine (binding, element offset inside it).
pub(crate) type CoreBinds<'b> = chunk::PassBinds<'b>;

/// Largest scratch binding of the chunk engine per row, for a caller's pass plan.
pub(crate) fn core_state_bytes(ctx: &Context, len: u64, dk: u64, dv: u64) -> u64 {
    let job = core_job(
        Storage::F32,
        2,
        &Core {
            len,
            dk,
            dv,
            causal: true,
            denominator: true,
            eps: 0.0,
        },
    );
    chunk::row_bytes(ctx, &job)
        .into_iter()
        .map(|(_, b)| b)
        .max()
        .unwrap_or(4)
}

fn core_job(storage: Storage, fmap: u32, c: &Core) -> chunk::Job {
    chunk::Job {
        storage,
        fmap,
        causal: c.causal,
        denominator: c.denominator,
        eps: c.eps,
        chunk: None,
        len: c.len,
        dk: c.dk,
        dv: c.dv,
    }
}

/// Records the chunk engine for `nr` rows that the caller bound.
pub(crate) fn record_core(
    s: &mut Schedule<'_>,
    storage: Storage,
    fmap: u32,
    c: &Core,
    nr: u64,
    b: &CoreBinds<'_>,
) -> Result<()> {
    chunk::record_rows(s, &core_job(storage, fmap, c), None, (0, nr), b)
}

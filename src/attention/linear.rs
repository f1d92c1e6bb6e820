//! Kernelized linear attention on the GPU (Katharopoulos et al. 2020, *Transformers are RNNs*,
//! arXiv 2006.16236, eqs. 4-6 and 16-20).
//!
//! Non-causal: `O_i = φ(Q_i)ᵀ S / (φ(Q_i)ᵀ z + ε)` with `S = Σ_j φ(K_j) V_jᵀ`, `z = Σ_j φ(K_j)`.
//! Causal: the sums run over `j ≤ i`, computed in the chunked parallel form: per chunk of rows,
//! a masked intra-chunk product plus the prefix state of all earlier chunks, so the work is
//! spread over L rather than one sequential loop per head. Any L; the last chunk is ragged.
//! The same chunk kernels serve precomputed features (Performer, [`super::favor`]) and the
//! prefill of recurrent decoding ([`super::recurrent`]).

use super::chunk::{self, Io, Job};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::Schedule;
use crate::types::attention::check_options;
pub use crate::types::attention::{check_shapes, AttnDims, LinearAttentionOptions};
use crate::{Context, Element, Result, Tensor};

const OP: &str = "linear_attention";

/// Linear attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` -> `o: [.., L, Dv]`
/// in the inputs' dtype. f16 tensors are stored as f16; all arithmetic and state is f32.
///
/// NaN in an input reaches exactly the outputs that depend on it. Errors: [`Error::Shape`](crate::Error::Shape) for
/// mismatched shapes, [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad ε. Any L: a (batch, head) row larger
/// than a storage binding runs in segments of L that carry the state (shaders/chunk_attention.wgsl).
pub fn linear_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<Tensor<T>> {
    driver::run(ctx, &Linear::new(q, k, v, opts))
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
    driver::run_into(ctx, &Linear::new(q, k, v, opts), out)
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
    driver::record(s, &Linear::new(q, k, v, opts), out)
}

/// The linear-attention op; with `state` = (S `[R, Dk, Dv]`, z `[R, Dk]`) f32 buffers, also
/// each row's sums over all L (the decoding state after a causal prefill).
pub(crate) struct Linear<'a, T: Element> {
    pub q: &'a Tensor<T>,
    pub k: &'a Tensor<T>,
    pub v: &'a Tensor<T>,
    pub opts: LinearAttentionOptions,
    pub state: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

impl<'a, T: Element> Linear<'a, T> {
    pub fn new(
        q: &'a Tensor<T>,
        k: &'a Tensor<T>,
        v: &'a Tensor<T>,
        opts: &LinearAttentionOptions,
    ) -> Self {
        Self {
            q,
            k,
            v,
            opts: *opts,
            state: None,
        }
    }
}

impl<T: Element> Linear<'_, T> {
    fn job(&self, storage: crate::pipeline::Storage, d: &AttnDims) -> Job {
        Job {
            storage,
            fmap: self.opts.feature_map.shader_id(),
            causal: self.opts.causal,
            denominator: self.opts.denominator,
            eps: self.opts.eps,
            chunk: None,
            len: d.len as u64,
            dk: d.dk as u64,
            dv: d.dv as u64,
        }
    }
}

impl<T: Element> RowOp for Linear<'_, T> {
    type T = T;
    type Dims = AttnDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(AttnDims, Plan)> {
        let d = check_shapes(OP, self.q.shape(), self.k.shape(), self.v.shape())?;
        check_options(OP, &self.opts)?;
        let job = self.job(crate::pipeline::Storage::F32, &d);
        let mut plan = super::qkv_plan::<T>(&d).bytes("S", (d.dk * d.dv) as u64 * 4);
        plan.row_bytes.extend(chunk::row_bytes(ctx, &job));
        plan.split_len = true;
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &AttnDims, p: &Pass<'_>) -> Result<()> {
        let io = Io {
            q: self.q.buffer(),
            k: self.k.buffer(),
            v: self.v.buffer(),
            in_bytes: size_of::<T>() as u64,
            totals: self.state,
        };
        chunk::record_pass(s, OP, &self.job(p.storage, d), None, &io, p)
    }
}

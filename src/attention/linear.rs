//! Kernelized linear attention on the GPU (Katharopoulos et al. 2020, *Transformers are RNNs*,
//! arXiv 2006.16236, eqs. 4-6 and 16-20).
//!
//! Non-causal: `O_i = φ(Q_i)ᵀ S / (φ(Q_i)ᵀ z + ε)` with `S = Σ_j φ(K_j) V_jᵀ`, `z = Σ_j φ(K_j)`.
//! Causal: the sums run over `j ≤ i`, computed in the chunked parallel form: per chunk of rows,
//! a masked intra-chunk product plus the prefix state of all earlier chunks, so the work is
//! spread over L rather than one sequential loop per head. Any L; the last chunk is ragged.
//! The same chunk kernels serve precomputed features (Performer, [`super::favor`]) and the
//! prefill of recurrent decoding ([`super::recurrent`]).

use super::chunk::{self, Geom, Io, Job};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::Schedule;
use crate::types::attention::check_options;
pub use crate::types::attention::{check_gqa, check_shapes, AttnDims, LinearAttentionOptions};
use crate::types::{CuSeqlens, GqaDims};
use crate::{Context, Element, Result, Tensor};

const OP: &str = "linear_attention";

/// Linear attention: `q: [B, Hq, Lq, Dk]`, `k: [B, Hkv, Lk, Dk]`, `v: [B, Hkv, Lk, Dv]` ->
/// `o: [B, Hq, Lq, Dv]` in the inputs' dtype, or each in `[B, L, H, D]` order with
/// `opts.layout` = [`Layout::Blhd`](crate::types::Layout::Blhd) (read through strides, no
/// transpose). Query head `h` reads key/value head `h / (Hq / Hkv)` (GQA; MQA with Hkv = 1);
/// Lq ≠ Lk only when not causal. Rank-3 `[H, L, D]` tensors are one batch entry (bhld only).
/// f16 tensors are stored as f16; all arithmetic and state is f32.
///
/// NaN in an input reaches exactly the outputs that depend on it. Errors: [`Error::Shape`](crate::Error::Shape) for
/// mismatched shapes ([`check_gqa`]), [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad ε. Any L: a (batch, head) row larger
/// than a storage binding runs in segments of L that carry the state (shaders/chunk_attention.wgsl);
/// with `[B, L, H, D]`, a batch entry (all heads) is split along L.
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

/// The state of causal linear attention at a sequence boundary (Katharopoulos et al. 2020, eqs.
/// 16-20): `S = Σ_j φ(k_j) v_jᵀ` `[N, Hq, Dk, Dv]` and `z = Σ_j φ(k_j)` `[N, Hq, Dk]`, f32, one
/// per sequence (N = B) and query head (with GQA each query head keeps its own copy).
pub struct LinearState {
    /// S `[N, Hq, Dk, Dv]`.
    pub s: Tensor<f32>,
    /// z `[N, Hq, Dk]`.
    pub z: Tensor<f32>,
}

impl LinearState {
    /// A zero state for `n` sequences of `heads` heads (what a call without one starts from).
    ///
    /// # Errors
    /// As [`Tensor::empty`] (wgpu zero-fills new buffers).
    pub fn zeros(ctx: &Context, n: usize, heads: usize, dk: usize, dv: usize) -> Result<Self> {
        Ok(Self {
            s: Tensor::empty(ctx, &[n, heads, dk, dv])?,
            z: Tensor::empty(ctx, &[n, heads, dk])?,
        })
    }
}

/// Checks an initial state against the call's sizes and context.
pub(crate) fn check_state(
    op: &'static str,
    ctx: &Context,
    st: &LinearState,
    (n, h, dk, dv): (usize, usize, usize, usize),
) -> Result<()> {
    for (name, t, want) in [
        ("initial_state", &st.s, vec![n, h, dk, dv]),
        ("initial_z", &st.z, vec![n, h, dk]),
    ] {
        if t.shape() != want.as_slice() {
            return Err(crate::Error::Shape {
                op,
                name,
                expected: format!("{want:?} ([N, Hq, Dk, Dv] / [N, Hq, Dk])"),
                got: t.shape().to_vec(),
            });
        }
        if t.context_id() != ctx.id() {
            return Err(crate::Error::WrongContext { op, name });
        }
    }
    Ok(())
}

/// Causal [`linear_attention`] that starts from `initial` (none: zero) and also returns the state
/// after the last token, so a sequence processed in two calls (the second starting from the
/// first's state) equals one call. Any layout and GQA as [`linear_attention`]; the state is per
/// (batch entry, query head).
///
/// # Errors
/// As [`linear_attention`]; [`Error::InvalidArgument`](crate::Error::InvalidArgument) when
/// `opts.causal` is false; [`Error::Shape`](crate::Error::Shape) for a state of the wrong shape.
pub fn linear_attention_with_state<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    initial: Option<&LinearState>,
    opts: &LinearAttentionOptions,
) -> Result<(Tensor<T>, LinearState)> {
    stateful(ctx, (q, k, v), None, initial, opts)
}

fn stateful<T: Element>(
    ctx: &Context,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    cu: Option<&CuSeqlens>,
    initial: Option<&LinearState>,
    opts: &LinearAttentionOptions,
) -> Result<(Tensor<T>, LinearState)> {
    if !opts.causal {
        return Err(crate::Error::InvalidArgument {
            op: OP,
            name: "causal",
            reason: "a state in or out needs causal attention".into(),
        });
    }
    let d = check_gqa(OP, q.shape(), k.shape(), v.shape(), opts.layout, true)?;
    let n = cu.map_or(d.batch, CuSeqlens::count);
    let sizes = (n, d.q_heads, d.dk, d.dv);
    if let Some(st) = initial {
        check_state(OP, ctx, st, sizes)?;
    }
    let out = Tensor::empty(ctx, &d.out_shape)?;
    let fin = LinearState {
        s: Tensor::empty(ctx, &[sizes.0, sizes.1, sizes.2, sizes.3])?,
        z: Tensor::empty(ctx, &[sizes.0, sizes.1, sizes.2])?,
    };
    let mut op = Linear::new(q, k, v, opts);
    op.state = Some((fin.s.buffer(), fin.z.buffer()));
    op.initial = initial.map(|st| (st.s.buffer(), st.z.buffer()));
    op.seqs = cu;
    driver::submit(ctx, |s| driver::record(s, &op, &out))?;
    Ok((out, fin))
}

/// Packed sequences need B = 1, Lq = Lk and the last offset within L.
pub(crate) fn check_varlen(op: &'static str, d: &GqaDims, cu: Option<&CuSeqlens>) -> Result<()> {
    let Some(cu) = cu else { return Ok(()) };
    let shape = d.layout.shape(d.batch, d.q_heads, d.q_len, d.dk).to_vec();
    let last = *cu.offsets().last().unwrap_or(&0) as usize;
    if d.batch != 1 || d.q_len != d.kv_len {
        return Err(crate::Error::Shape {
            op,
            name: "q",
            expected: "B = 1 and Lq = Lk with cu_seqlens (packed sequences)".into(),
            got: shape,
        });
    }
    if last > d.q_len {
        return Err(crate::Error::InvalidArgument {
            op,
            name: "cu_seqlens",
            reason: format!(
                "last offset {last} is past the packed length L = {}",
                d.q_len
            ),
        });
    }
    Ok(())
}

/// [`linear_attention`] over packed sequences (flash-linear-attention's `cu_seqlens`): B = 1, and
/// sequence i holds tokens `[cu[i], cu[i + 1])` of the packed length L. Each sequence is attended
/// on its own (causal or not, any feature map, GQA, either layout); nothing crosses a boundary,
/// and the outputs of tokens past the last offset are left untouched (zero in the new tensor).
///
/// # Errors
/// As [`linear_attention`]; [`Error::Shape`](crate::Error::Shape) for B ≠ 1 or Lq ≠ Lk;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a last offset past L.
pub fn linear_attention_varlen<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    cu: &CuSeqlens,
    opts: &LinearAttentionOptions,
) -> Result<Tensor<T>> {
    let mut op = Linear::new(q, k, v, opts);
    op.seqs = Some(cu);
    driver::run(ctx, &op)
}

/// [`linear_attention_varlen`] writing into an existing `out` (q's shape with Dv); the tokens past
/// the last offset keep what `out` held.
pub fn linear_attention_varlen_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    cu: &CuSeqlens,
    out: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<()> {
    let mut op = Linear::new(q, k, v, opts);
    op.seqs = Some(cu);
    driver::run_into(ctx, &op, out)
}

/// Causal [`linear_attention_varlen`] with a state per sequence: `initial` (none: zero) is
/// S `[N, Hq, Dk, Dv]`, z `[N, Hq, Dk]` for the N sequences of `cu`, and the returned state is each
/// sequence's state after its last token (an empty sequence returns its initial state).
///
/// # Errors
/// As [`linear_attention_varlen`] and [`linear_attention_with_state`].
pub fn linear_attention_varlen_with_state<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    cu: &CuSeqlens,
    initial: Option<&LinearState>,
    opts: &LinearAttentionOptions,
) -> Result<(Tensor<T>, LinearState)> {
    stateful(ctx, (q, k, v), Some(cu), initial, opts)
}

/// The linear-attention op; with `state` = (S `[R, Dk, Dv]`, z `[R, Dk]`) f32 buffers, also
/// each row's sums over all L (the decoding state after a causal prefill).
pub(crate) struct Linear<'a, T: Element> {
    pub q: &'a Tensor<T>,
    pub k: &'a Tensor<T>,
    pub v: &'a Tensor<T>,
    pub opts: LinearAttentionOptions,
    pub state: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// The state entering token 0 (same layout as `state`); none = zero.
    pub initial: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// Packed sequences (B = 1, Lq = Lk); `state` and `initial` are then per sequence.
    pub seqs: Option<&'a CuSeqlens>,
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
            initial: None,
            seqs: None,
        }
    }
}

impl<T: Element> Linear<'_, T> {
    fn job(&self, storage: crate::pipeline::Storage, d: &GqaDims) -> Job {
        Job {
            storage,
            fmap: self.opts.feature_map.shader_id(),
            causal: self.opts.causal,
            denominator: self.opts.denominator,
            eps: self.opts.eps,
            chunk: None,
            len: d.q_len.max(d.kv_len) as u64,
            dk: d.dk as u64,
            dv: d.dv as u64,
            rescale: false,
            softmax: None,
        }
    }
}

impl<T: Element> RowOp for Linear<'_, T> {
    type T = T;
    type Dims = GqaDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(GqaDims, Plan)> {
        let o = &self.opts;
        let d = check_gqa(
            OP,
            self.q.shape(),
            self.k.shape(),
            self.v.shape(),
            o.layout,
            o.causal,
        )?;
        check_options(OP, o)?;
        check_varlen(OP, &d, self.seqs)?;
        let job = self.job(crate::pipeline::Storage::F32, &d);
        let gm = Geom::of(&d);
        let (len, dk, dv) = (job.len, job.dk, job.dv);
        let es = size_of::<T>() as u64;
        let rows = (d.batch * d.q_heads) as u64;
        let mut plan = Plan::new(d.out_shape.clone(), rows, gm.lq * dv)
            .bytes("q", len * dk * es)
            .bytes("v", len * dv * es)
            .bytes("S", dk * dv * 4);
        plan.row_bytes.extend(chunk::row_bytes(ctx, &job));
        plan.split_len = true;
        plan.row_group = gm.unit;
        plan.partial_out = self.seqs.is_some();
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &GqaDims, p: &Pass<'_>) -> Result<()> {
        let io = Io {
            q: self.q.buffer(),
            k: self.k.buffer(),
            v: self.v.buffer(),
            in_bytes: size_of::<T>() as u64,
            totals: self.state,
            geom: Geom::of(d),
            initial: self.initial,
            seqs: self.seqs,
        };
        chunk::record_pass(s, OP, &self.job(p.storage, d), None, &io, p)
    }
}

//! Performer attention (FAVOR+, [`super::favor`]) over real-world batches (issue 14): q, k, v in
//! either [`Layout`] (read through strides), packed variable-length sequences ([`CuSeqlens`], as
//! flash-linear-attention defines them) and, for causal positive features, a state carried in and
//! out ([`FavorState`]) so that a sequence processed in two calls equals one call.
//!
//! Each sequence (a batch entry, or the tokens `[cu[i], cu[i + 1])` of the packed B = 1 tensor)
//! runs on its own: its tokens of every head are gathered into a dense f32 `[H, n, D]` copy
//! (`seq_gather`, shaders/favor_batch.wgsl), the FAVOR pipeline of [`super::favor`] runs on it
//! (features per sequence, nothing crosses a boundary), and `seq_store` writes its outputs back
//! through the output's strides. Tokens past the last offset are never written. Stabilisers and
//! the range that holds are [`super::favor`]'s (causal trig: one key stabiliser per chunk).
//!
//! The state of causal positive FAVOR+. The op stabilises every key feature `r` by the running
//! maximum of its logits `a_r(k_j) = ω_rᵀk_j' − ‖k_j'‖²/2` (see [`super::favor`]); the state keeps
//! that maximum, so it never under- or overflows whatever the keys' norms:
//! - `m_r = max_j a_r(k_j)` (`f32::MIN` when no key has been seen),
//! - `S_r = Σ_j exp(a_r(k_j) − m_r) v_j` `[Dv]`, `z_r = Σ_j exp(a_r(k_j) − m_r)`,
//!
//! over the keys seen so far, so `Σ_j φ⁺(k_j)_r v_j = M^(−1/2) exp(m_r) S_r` (likewise z). A row
//! `i` meets the initial state as it meets earlier chunks: `exp(a_r(q_i) + m_r − C_i)`, with `C_i`
//! the row's largest log-term over everything it sees (the initial `m` included), so every
//! exponent is ≤ 0.

use bytemuck::Zeroable;

use super::favor::{check_omega, record_core, Core, FavorKind, FavorOptions};
use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, OutSlot, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::types::attention::check_gqa;
use crate::types::{CuSeqlens, GqaDims, Layout};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "favor_attention_batch";
const WG: u32 = 64;

crate::uniform! {
    /// The `Params` uniform of shaders/favor_batch.wgsl.
    pub(crate) struct Params {
        heads: u32,
        n: u32,
        d: u32,
        t0: u32,
        base: u32,
        hs: u32,
        ts: u32,
        total: u32,
        x_off: u32,
        m: u32,
        stride: u32,
        count: u32,
        m_off: u32,
        s_off: u32,
        z_off: u32,
        norm: f32,
        group: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// The state of causal positive FAVOR+ at a sequence boundary, per sequence and head, f32 (see
/// the module docs for what it holds).
pub struct FavorState {
    /// S `[N, H, M, Dv]`, at the scale `exp(−m)` per feature.
    pub s: Tensor<f32>,
    /// z `[N, H, M]`, at the same scale.
    pub z: Tensor<f32>,
    /// m `[N, H, M]`: the largest key logit per feature seen so far (`f32::MIN`: none).
    pub m: Tensor<f32>,
}

impl FavorState {
    /// The state before any key (what a call without one starts from): S = 0, z = 0,
    /// m = `f32::MIN`, for `n` sequences of `heads` heads, `m` features and value dim `dv`.
    ///
    /// # Errors
    /// As [`Tensor::from_slice`].
    pub fn empty(ctx: &Context, n: usize, heads: usize, m: usize, dv: usize) -> Result<Self> {
        Ok(Self {
            s: Tensor::empty(ctx, &[n, heads, m, dv])?,
            z: Tensor::empty(ctx, &[n, heads, m])?,
            m: Tensor::from_slice(ctx, &vec![f32::MIN; n * heads * m], &[n, heads, m])?,
        })
    }

    fn check(&self, ctx: &Context, (n, h, m, dv): (usize, usize, usize, usize)) -> Result<()> {
        for (name, t, want) in [
            ("initial_state", &self.s, vec![n, h, m, dv]),
            ("initial_z", &self.z, vec![n, h, m]),
            ("initial_max", &self.m, vec![n, h, m]),
        ] {
            if t.shape() != want.as_slice() {
                return Err(Error::Shape {
                    op: OP,
                    name,
                    expected: format!("{want:?} ([N, H, M, Dv] / [N, H, M])"),
                    got: t.shape().to_vec(),
                });
            }
            if t.context_id() != ctx.id() {
                return Err(Error::WrongContext { op: OP, name });
            }
        }
        Ok(())
    }
}

/// [`favor_attention`](super::favor_attention) over a batch in `layout` (q, k `[B, H, L, Dk]`,
/// v `[B, H, L, Dv]`, or `[B, L, H, D]` each; rank 3 `[H, L, D]` with bhld), optionally packed
/// (`cu`, B = 1: sequence i holds tokens `[cu[i], cu[i + 1])`; each gets its own features and
/// sums, tokens past the last offset are left untouched, zero in the new output). Grouped heads
/// (GQA/MQA): k, v `[B, Hkv, L, ·]` with Hkv dividing Hq, query head h reads kv head
/// h / (Hq / Hkv); Lq = Lk. `omega: [M, Dk]` f32 as given.
///
/// # Errors
/// [`Error::Shape`] for mismatched shapes, Hkv not dividing Hq or Lq ≠ Lk, B ≠ 1 with `cu`, or ω not
/// `[M, Dk]`; [`Error::InvalidArgument`] for M = 0 or a last offset past L; [`Error::TooLarge`] when a sequence's copies do
/// not fit a storage binding.
pub fn favor_attention_batch<T: Element>(
    ctx: &Context,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    omega: &Tensor<f32>,
    layout: Layout,
    cu: Option<&CuSeqlens>,
    opts: &FavorOptions,
) -> Result<Tensor<T>> {
    driver::run(ctx, &FavorBatch::new((q, k, v), omega, layout, cu, opts))
}

/// [`favor_attention_batch`] writing into an existing `out` (q's shape with Dv); tokens past the
/// last offset keep what `out` held.
///
/// # Errors
/// As [`favor_attention_batch`], and for an `out` of the wrong shape or context.
pub fn favor_attention_batch_into<T: Element>(
    ctx: &Context,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    omega: &Tensor<f32>,
    layout: Layout,
    cu: Option<&CuSeqlens>,
    out: &Tensor<T>,
    opts: &FavorOptions,
) -> Result<()> {
    let op = FavorBatch::new((q, k, v), omega, layout, cu, opts);
    driver::run_into(ctx, &op, out)
}

/// Causal positive [`favor_attention_batch`] that starts each sequence from `initial` (none:
/// [`FavorState::empty`]) and returns the state after its last token (an empty sequence returns
/// its initial state), so a sequence processed in two calls equals one call.
///
/// # Errors
/// As [`favor_attention_batch`]; [`Error::InvalidArgument`] unless causal with positive features;
/// [`Error::Shape`] for a state not `[N, H, M, Dv]` / `[N, H, M]` (N = B, or the packed count).
pub fn favor_attention_batch_with_state<T: Element>(
    ctx: &Context,
    qkv: (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    omega: &Tensor<f32>,
    layout: Layout,
    cu: Option<&CuSeqlens>,
    initial: Option<&FavorState>,
    opts: &FavorOptions,
) -> Result<(Tensor<T>, FavorState)> {
    let g = check_gqa(
        OP,
        qkv.0.shape(),
        qkv.1.shape(),
        qkv.2.shape(),
        layout,
        true,
    )?;
    let out = Tensor::empty(ctx, &g.out_shape)?;
    let st =
        favor_attention_batch_with_state_into(ctx, qkv, omega, layout, cu, initial, &out, opts)?;
    Ok((out, st))
}

/// [`favor_attention_batch_with_state`] writing into an existing `out`; returns the final state.
///
/// # Errors
/// As [`favor_attention_batch_with_state`] and [`favor_attention_batch_into`].
#[allow(clippy::too_many_arguments)]
pub fn favor_attention_batch_with_state_into<T: Element>(
    ctx: &Context,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    omega: &Tensor<f32>,
    layout: Layout,
    cu: Option<&CuSeqlens>,
    initial: Option<&FavorState>,
    out: &Tensor<T>,
    opts: &FavorOptions,
) -> Result<FavorState> {
    if !opts.causal || opts.kind != FavorKind::Positive {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "opts",
            reason: "a state in or out needs causal attention with positive features".into(),
        });
    }
    let g = check_gqa(OP, q.shape(), k.shape(), v.shape(), layout, true)?;
    let m = check_omega(OP, omega.shape(), g.dk)?;
    let n = cu.map_or(g.batch, CuSeqlens::count);
    let sizes = (n, g.q_heads, m, g.dv);
    let zero;
    let init = match initial {
        Some(st) => {
            st.check(ctx, sizes)?;
            st
        }
        None => {
            zero = FavorState::empty(ctx, n, g.q_heads, m, g.dv)?;
            &zero
        }
    };
    let fin = FavorState {
        s: Tensor::empty(ctx, &[n, g.q_heads, m, g.dv])?,
        z: Tensor::empty(ctx, &[n, g.q_heads, m])?,
        m: Tensor::empty(ctx, &[n, g.q_heads, m])?,
    };
    let mut op = FavorBatch::new((q, k, v), omega, layout, cu, opts);
    op.state = Some((init, &fin));
    driver::run_into(ctx, &op, out)?;
    Ok(fin)
}

/// The batch op: one driver pass over every sequence.
struct FavorBatch<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    omega: &'a Tensor<f32>,
    layout: Layout,
    cu: Option<&'a CuSeqlens>,
    opts: FavorOptions,
    /// (initial, final) for a stateful call.
    state: Option<(&'a FavorState, &'a FavorState)>,
}

impl<'a, T: Element> FavorBatch<'a, T> {
    fn new(
        (q, k, v): (&'a Tensor<T>, &'a Tensor<T>, &'a Tensor<T>),
        omega: &'a Tensor<f32>,
        layout: Layout,
        cu: Option<&'a CuSeqlens>,
        opts: &FavorOptions,
    ) -> Self {
        Self {
            q,
            k,
            v,
            omega,
            layout,
            cu,
            opts: *opts,
            state: None,
        }
    }

    /// The sequences as (batch entry, first token, length).
    fn seqs(&self, g: &GqaDims) -> Vec<(u64, u64, u64)> {
        match self.cu {
            Some(c) => (0..c.count())
                .map(|i| (0, c.range(i).start as u64, c.range(i).len() as u64))
                .collect(),
            None => (0..g.batch as u64)
                .map(|b| (b, 0, g.q_len as u64))
                .collect(),
        }
    }
}

impl<T: Element> RowOp for FavorBatch<'_, T> {
    type T = T;
    /// Sizes and M.
    type Dims = (GqaDims, u64);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let (q, k, v) = (self.q.shape(), self.k.shape(), self.v.shape());
        // Grouped heads (GQA/MQA) are read through the gather; Lq = Lk.
        let g = check_gqa(OP, q, k, v, self.layout, true)?;
        let m = check_omega(OP, self.omega.shape(), g.dk)? as u64;
        super::linear::check_varlen(OP, &g, self.cu)?;
        let (h, dk, dv) = (g.q_heads as u64, g.dk as u64, g.dv as u64);
        let n = self.seqs(&g).iter().map(|s| s.2).max().unwrap_or(0).max(1);
        let f = self.opts.kind.num_features(m as usize) as u64;
        let total: u64 = g.out_shape.iter().map(|&x| x as u64).product();
        let es = size_of::<T>() as u64;
        let seq = |n: u64| seq_bytes(ctx, &self.opts, (h, n, dk, dv, f));
        let limit = ctx.limits().max_storage_buffer_binding_size;
        let slack = ctx.limits().min_storage_buffer_offset_alignment as u64 + 4;
        let fits = |n: u64| seq(n).iter().all(|&(_, b)| b + slack <= limit);
        if !fits(n) {
            // The dense copy of one sequence must fit a binding: no split along L here.
            let (mut lo, mut hi) = (0, n);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid) {
                    lo = mid
                } else {
                    hi = mid
                }
            }
            let (what, needed) = seq(n).into_iter().max_by_key(|x| x.1).unwrap_or(("q", 0));
            return Err(Error::TooLarge {
                op: OP,
                what: format!(
                    "`{what}` of a sequence of {n} tokens; the longest sequence that runs on \
                     this adapter is L = {lo} (one sequence is not split along L)"
                ),
                needed: needed + slack,
                limit,
            });
        }
        let mut plan = Plan::new(g.out_shape.clone(), 1, total)
            .bytes("q (whole)", self.q.len() as u64 * es)
            .bytes("v (whole)", self.v.len() as u64 * es);
        plan.row_bytes.extend(seq(n));
        plan.partial_out = self.cu.is_some();
        Ok(((g, m), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut i = super::qkv_inputs(self.q, self.k, self.v);
        i.push(Input::of("omega", self.omega));
        if let Some((s0, _)) = self.state {
            i.push(Input::of("initial_state", &s0.s));
            i.push(Input::of("initial_z", &s0.z));
            i.push(Input::of("initial_max", &s0.m));
        }
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, (g, m): &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (h, dk, dv, m) = (g.q_heads as u64, g.dk as u64, g.dv as u64, *m);
        let seqs = self.seqs(g);
        let n_max = seqs.iter().map(|x| x.2).max().unwrap_or(0).max(1);
        let dense = |d: u64| scratch(ctx, h * n_max * d * 4);
        let (dq, dk_, dv_, dout) = (dense(dk), dense(dk), dense(dv), dense(dv));
        let es = size_of::<T>() as u64;
        for (i, &(b, t0, n)) in seqs.iter().enumerate() {
            let rows = (i as u64 * h, h);
            if n == 0 {
                if let Some((s0, s1)) = self.state {
                    copy_state(s, (s0, s1), rows, (m, dv));
                }
                continue;
            }
            let seq = Seq {
                g,
                b,
                t0,
                n,
                storage: p.storage,
            };
            let kv = [(self.k, &dk_, dk, true), (self.v, &dv_, dv, true)];
            for (t, buf, d, grouped) in [(self.q, &dq, dk, false)].into_iter().chain(kv) {
                let x = Bind::elems(ctx, 1, t.buffer(), es, 0, t.len() as u64);
                record_strided(s, ("seq_gather", grouped), &seq, d, x, buf)?;
            }
            let x = |d: u64| h * n * d * 4;
            let run = Core {
                kind: self.opts.kind,
                causal: self.opts.causal,
                storage: Storage::F32,
                omega: self.omega.buffer(),
                sizes: (h, n, dk, dv, m),
                x: [
                    Bind::prefix_at(1, &dq, x(dk)),
                    Bind::prefix_at(1, &dk_, x(dk)),
                    Bind::prefix_at(1, &dv_, x(dv)),
                ],
                prefill: None,
                carry: self.state.map(|st| Carry::of(ctx, st, rows, (m, dv))),
            };
            let o = OutSlot {
                buffer: &dout,
                elem_bytes: 4,
                first: 0,
            };
            record_core(s, &run, &o)?;
            let total: u64 = g.out_shape.iter().map(|&x| x as u64).product();
            let out = p.out.bind(ctx, 3, total);
            record_strided(s, ("seq_store", false), &seq, dv, out, &dout)?;
        }
        Ok(())
    }
}

/// Bytes of each binding of one sequence's run (`h` heads, `n` tokens, F features): the dense
/// copies, the features, the intra-chunk weights (causal positive) and the chunk engine's scratch.
fn seq_bytes(
    ctx: &Context,
    o: &FavorOptions,
    (h, n, dk, dv, f): (u64, u64, u64, u64, u64),
) -> Vec<(&'static str, u64)> {
    // Causal runs (positive or trig) split the engine's work (favor_core).
    let split = o.causal;
    let job = super::favor::core_job(n, f, dv, o.causal, split);
    let chunk = super::chunk::chunk_len(ctx, &job) as u64;
    let mut b = vec![
        ("q", h * n * dk * 4),
        ("v", h * n * (dv + 1) * 4),
        ("features", h * n * f * 4),
        ("S", h * f * (dv + 1) * 4),
    ];
    if split {
        b.push((
            "intra-chunk weights",
            h * super::favor::intra_bytes(n, chunk),
        ));
    }
    let engine = super::chunk::row_bytes(ctx, &job);
    b.extend(engine.into_iter().map(|(w, x)| (w, h * x)));
    b
}

/// An empty sequence's final state is its initial state.
fn copy_state(
    s: &mut Schedule<'_>,
    (s0, s1): (&FavorState, &FavorState),
    (r0, nr): (u64, u64),
    (m, dv): (u64, u64),
) {
    let (a, b) = (r0 * m * dv * 4, r0 * m * 4);
    s.copy(s0.s.buffer(), a, s1.s.buffer(), a, nr * m * dv * 4);
    s.copy(s0.z.buffer(), b, s1.z.buffer(), b, nr * m * 4);
    s.copy(s0.m.buffer(), b, s1.m.buffer(), b, nr * m * 4);
}

/// One sequence: batch entry `b`, tokens `[t0, t0 + n)`, every head.
struct Seq<'g> {
    g: &'g GqaDims,
    b: u64,
    t0: u64,
    n: u64,
    storage: Storage,
}

/// `seq_gather` (x: the strided input at slot 1, `dense` its copy) or `seq_store` (x: the strided
/// output at slot 3, `dense` the sequence's output) over one sequence of feature dim `d`;
/// `grouped`: x is k or v with Hkv heads, query head h reads kv head h / (Hq / Hkv).
fn record_strided(
    s: &mut Schedule<'_>,
    (entry, grouped): (&'static str, bool),
    q: &Seq<'_>,
    d: u64,
    x: (Bind<'_>, u32),
    dense: &wgpu::Buffer,
) -> Result<()> {
    let ctx = s.context();
    let g = q.g;
    let (heads, group) = match grouped {
        true => (g.kv_heads, g.q_heads / g.kv_heads.max(1)),
        false => (g.q_heads, 1),
    };
    let st = g.layout.strides(heads, g.q_len, d as usize);
    let total = g.q_heads as u64 * q.n * d;
    let prm = Params {
        heads: g.q_heads as u32,
        n: q.n as u32,
        d: d as u32,
        t0: q.t0 as u32,
        base: (q.b * st.batch as u64) as u32,
        hs: st.head as u32,
        ts: st.token as u32,
        total: total as u32,
        x_off: x.1,
        group: group as u32,
        ..Zeroable::zeroed()
    };
    let pl = ctx
        .pipelines
        .get(ctx, "favor_batch", entry, q.storage, &[("WG", WG)])?;
    let b = Bind::prefix(2, dense, total * 4);
    s.dispatch(&pl, &prm, &[x.0, b], total.div_ceil(WG as u64))
}

/// The state bindings of one sequence's rows: the initial m0, S0, z0 (slots 4, 5, 6) and the
/// final S, z, m (slots 9, 10, 11); each final tensor has its initial one's shape, so both share
/// one element offset.
pub(crate) struct Carry<'b> {
    pub init: [(Bind<'b>, u32); 3],
    pub fin: [(Bind<'b>, u32); 3],
}

impl<'b> Carry<'b> {
    fn of(
        ctx: &Context,
        (s0, s1): (&'b FavorState, &'b FavorState),
        (r0, nr): (u64, u64),
        (m, dv): (u64, u64),
    ) -> Self {
        let e = |slot, t: &'b Tensor<f32>, w: u64| {
            Bind::elems(ctx, slot, t.buffer(), 4, r0 * w, nr * w)
        };
        Self {
            init: [e(4, &s0.m, m), e(5, &s0.s, m * dv), e(6, &s0.z, m)],
            fin: [e(9, &s1.s, m * dv), e(10, &s1.z, m), e(11, &s1.m, m)],
        }
    }

    fn params(&self, m: u64) -> Params {
        Params {
            m: m as u32,
            m_off: self.init[0].1,
            s_off: self.init[1].1,
            z_off: self.init[2].1,
            norm: (m as f32).powf(-0.5),
            ..Zeroable::zeroed()
        }
    }
}

fn pipeline(ctx: &Context, entry: &'static str) -> Result<std::sync::Arc<wgpu::ComputePipeline>> {
    ctx.pipelines
        .get(ctx, "favor_batch", entry, Storage::F32, &[("WG", WG)])
}

/// `dst[r·stride + t·M + a] = max(dst, m0[r, a])` for `nr` rows and `t < count`.
pub(crate) fn record_fold_max(
    s: &mut Schedule<'_>,
    m0: (Bind<'_>, u32),
    dst: &wgpu::Buffer,
    (nr, m, stride, count): (u64, u64, u64, u64),
) -> Result<()> {
    let total = nr * count * m;
    let prm = Params {
        m: m as u32,
        stride: stride as u32,
        count: count as u32,
        m_off: m0.1,
        total: total as u32,
        ..Zeroable::zeroed()
    };
    let pl = pipeline(s.context(), "fold_max")?;
    let b = [Bind::prefix(2, dst, dst.size()), Bind { slot: 4, ..m0.0 }];
    s.dispatch(&pl, &prm, &b, total.div_ceil(WG as u64))
}

/// Adds the initial state's terms to `nd` (`[nr, len, Dv + 1]`), from the query logits `lq`
/// `[nr, len, M]` and each row's stabiliser `cq` `[nr, len]`.
pub(crate) fn record_initial(
    s: &mut Schedule<'_>,
    c: &Carry<'_>,
    (nr, len, dv, m): (u64, u64, u64, u64),
    (lq, cq): (&wgpu::Buffer, &wgpu::Buffer),
    nd: &wgpu::Buffer,
) -> Result<()> {
    let total = nr * len * (dv + 1);
    let prm = Params {
        n: len as u32,
        d: dv as u32,
        total: total as u32,
        ..c.params(m)
    };
    let pl = pipeline(s.context(), "favor_initial")?;
    let b = [
        Bind::prefix(2, nd, total * 4),
        c.init[0].0,
        c.init[1].0,
        c.init[2].0,
        Bind::prefix(7, lq, nr * len * m * 4),
        Bind::prefix(8, cq, nr * len * 4),
    ];
    s.dispatch(&pl, &prm, &b, total.div_ceil(WG as u64))
}

/// Writes the final state from the engine's totals `tot` (`[nr, M, Dv + 1]`, at the scale of the
/// last chunk's key maxima `kmax` `[nr, nc, M]`) and the initial state.
pub(crate) fn record_final(
    s: &mut Schedule<'_>,
    c: &Carry<'_>,
    (nr, nc, dv, m): (u64, u64, u64, u64),
    kmax: &wgpu::Buffer,
    tot: &wgpu::Buffer,
) -> Result<()> {
    debug_assert_eq!(
        [c.init[0].1, c.init[1].1, c.init[2].1],
        [c.fin[2].1, c.fin[0].1, c.fin[1].1]
    );
    let total = nr * m * (dv + 1);
    let prm = Params {
        d: dv as u32,
        count: nc as u32,
        total: total as u32,
        ..c.params(m)
    };
    let pl = pipeline(s.context(), "favor_final")?;
    let b = [
        Bind::prefix(2, tot, total * 4),
        c.init[0].0,
        c.init[1].0,
        c.init[2].0,
        Bind::prefix(7, kmax, nr * nc * m * 4),
        c.fin[0].0,
        c.fin[1].0,
        c.fin[2].0,
    ];
    s.dispatch(&pl, &prm, &b, total.div_ceil(WG as u64))
}

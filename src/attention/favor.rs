//! Performer attention: linear attention with FAVOR+ random features (Choromanski et al. 2021,
//! *Rethinking Attention with Performers*, arXiv 2009.14794, Lemma 1, §2.3-2.4).
//!
//! With `x' = x·d^(−1/4)` (so `x'ᵀy' = xᵀy/√d`) and `ω: [M, Dk]`:
//! - positive features `φ⁺(x) = M^(−1/2) [exp(ω_rᵀx' − ‖x'‖²/2)]_{r<M}`, F = M, an unbiased and
//!   positive estimate of the softmax kernel `exp(qᵀk/√d)`;
//! - trig features `φ(x) = M^(−1/2) exp(‖x'‖²/2) [sin(ω_rᵀx'), cos(ω_rᵀx')]`, F = 2M, unbiased but
//!   not positive (the denominator can come near 0).
//!
//! The output is the linear-attention ratio `O_i = Σ_j (φ(q_i)·φ(k_j)) v_j / Σ_j φ(q_i)·φ(k_j)`
//! (no ε). Stabiliser: a constant subtracted inside exp, per query row (its largest log-feature)
//! and per head over all keys and all L; each cancels in the ratio. Denominator guard: a row whose
//! denominator is exactly 0 (every weight underflowed) outputs 0, as the CPU reference does.
//! Features are f32 on the GPU whatever the storage dtype; ω is always f32.
//!
//! Limit of the head-wide key stabiliser: a key whose largest log-feature lies more than ≈ 87
//! below the head's maximum underflows to 0 in f32 (about 745 in the f64 reference). In causal
//! mode a later, far larger key can so zero an earlier row's every weight; that row then gets the
//! guard's 0, where the f64 reference (or recurrent decoding, whose stabiliser is a running
//! maximum) still has a value.

use bytemuck::{Pod, Zeroable};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::linear::{check_shapes, core_state_bytes, record_core, whole, Core, CoreBinds};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, scratch, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

/// Which random features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FavorKind {
    /// `exp(ωᵀx' − ‖x'‖²/2)`: positive (FAVOR+), F = M features.
    #[default]
    Positive,
    /// `exp(‖x'‖²/2)·[sin(ωᵀx'), cos(ωᵀx')]`: F = 2M features, not positive.
    Trig,
}

impl FavorKind {
    /// Features per position for `m` random directions.
    pub fn num_features(self, m: usize) -> usize {
        match self {
            FavorKind::Positive => m,
            FavorKind::Trig => 2 * m,
        }
    }
}

/// How [`draw_omega`] draws the random directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OmegaDraw {
    /// Rows i.i.d. N(0, I_d).
    Gaussian,
    /// Blocks of d mutually orthogonal rows (Q of the QR of a d×d Gaussian, sign-fixed), each
    /// row rescaled to the norm of an independent N(0, I_d) draw (chi-distributed), §2.4.
    #[default]
    OrthogonalChi,
    /// Orthogonal blocks, every row of norm √d.
    OrthogonalSqrtD,
}

/// Options for [`favor_attention`] and the CPU reference
/// [`crate::reference::attention::favor_attention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FavorOptions {
    pub kind: FavorKind,
    /// Sum over `j ≤ i` only.
    pub causal: bool,
}

const OP: &str = "favor_attention";

/// ω `[m, dk]` row-major f32, drawn from `seed` (rand's `StdRng`). `m` need not be a multiple
/// of `dk`: the last orthogonal block keeps its first `m mod dk` rows.
/// Errors: [`Error::InvalidArgument`] when `m` or `dk` is 0.
pub fn draw_omega(m: usize, dk: usize, draw: OmegaDraw, seed: u64) -> Result<Vec<f32>> {
    for (name, v) in [("num_features", m), ("dk", dk)] {
        if v == 0 {
            return Err(Error::InvalidArgument {
                op: "draw_omega",
                name,
                reason: "must be >= 1".into(),
            });
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = move || -> f64 { rng.sample(StandardNormal) };
    let mut w = Vec::with_capacity(m * dk);
    if draw == OmegaDraw::Gaussian {
        w.extend((0..m * dk).map(|_| normal() as f32));
        return Ok(w);
    }
    while w.len() < m * dk {
        let g = DMatrix::<f64>::from_fn(dk, dk, |_, _| normal());
        let qr = g.qr();
        let (q, r) = (qr.q(), qr.r());
        // Columns of Q, signs fixed by diag(R) so the block is Haar-distributed.
        for c in 0..dk {
            if w.len() == m * dk {
                break;
            }
            let sign = if r[(c, c)] < 0.0 { -1.0 } else { 1.0 };
            let norm = match draw {
                OmegaDraw::OrthogonalChi => (0..dk).map(|_| normal().powi(2)).sum::<f64>().sqrt(),
                _ => (dk as f64).sqrt(),
            };
            w.extend((0..dk).map(|a| (sign * norm * q[(a, c)]) as f32));
        }
    }
    Ok(w)
}

/// Checks `omega: [M, Dk]` with M >= 1 against the inputs' Dk; returns M.
pub(crate) fn check_omega(op: &'static str, omega: &[usize], dk: usize) -> Result<usize> {
    if omega.len() != 2 || omega[1] != dk {
        return Err(Error::Shape {
            op,
            name: "omega",
            expected: format!("[M, {dk}] (M random directions of q's head dim)"),
            got: omega.to_vec(),
        });
    }
    if omega[0] == 0 {
        return Err(Error::InvalidArgument {
            op,
            name: "omega",
            reason: "M = 0 random features".into(),
        });
    }
    Ok(omega[0])
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    dk: u32,
    m: u32,
    x_off: u32,
    head_off: u32,
    total: u32,
    scale: f32,
    norm: f32,
    _pad: [u32; 3],
}

pub(crate) const WG: u32 = 64;

/// Where the key stabiliser goes: `None` = per position (queries); `Some` = per head, written to
/// the binding at slot 5 (a scratch buffer, or a decoding state's log-scale).
pub(crate) type HeadOut<'b> = Option<(Bind<'b>, u32)>;

/// Records FAVOR features of `nr` rows of `x` (bound at slot 1 with its element offset) into
/// `feat: [nr, len, F]` f32 (its logits first, in place), using `logscale: [nr, len]` f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_features(
    s: &mut Schedule<'_>,
    storage: Storage,
    kind: FavorKind,
    x: (Bind<'_>, u32),
    omega: &wgpu::Buffer,
    (nr, len, dk, m): (u64, u64, u64, u64),
    feat: &wgpu::Buffer,
    logscale: &wgpu::Buffer,
    head: HeadOut<'_>,
) -> Result<()> {
    let ctx = s.context();
    let f = kind.num_features(m as usize) as u64;
    let consts = [("WG", WG), ("TRIG", (kind == FavorKind::Trig) as u32)];
    let pl = |entry| ctx.pipelines.get(ctx, "favor", entry, storage, &consts);
    let b_omega = whole(2, omega, m * dk * 4).0;
    let b_feat = whole(3, feat, nr * len * f * 4).0;
    let b_log = whole(4, logscale, nr * len * 4).0;
    let mut prm = Params {
        rows: nr as u32,
        len: len as u32,
        dk: dk as u32,
        m: m as u32,
        x_off: x.1,
        head_off: head.map_or(0, |h| h.1),
        total: (nr * len) as u32,
        scale: (dk as f32).powf(-0.25),
        norm: (m as f32).powf(-0.5),
        _pad: [0; 3],
    };
    s.dispatch(
        &*pl("favor_logits")?,
        &prm,
        &[x.0, b_omega, b_feat, b_log],
        nr * len,
    )?;
    prm.total = (nr * len * f) as u32;
    let groups = (nr * len * f).div_ceil(WG as u64);
    match head {
        None => s.dispatch(&*pl("favor_exp_row")?, &prm, &[b_feat, b_log], groups),
        Some((h, _)) => {
            prm.total = nr as u32;
            s.dispatch(&*pl("head_max")?, &prm, &[b_log, h], nr)?;
            prm.total = (nr * len * f) as u32;
            s.dispatch(&*pl("favor_exp_head")?, &prm, &[b_feat, b_log, h], groups)
        }
    }
}

/// Records `xf[0..n] = f32(x[first..first + n])` (x bound at slot 1, xf at slot 6).
pub(crate) fn record_cast_f32(
    s: &mut Schedule<'_>,
    storage: Storage,
    x: (Bind<'_>, u32),
    xf: &wgpu::Buffer,
    n: u64,
) -> Result<()> {
    record_elementwise(s, "cast_f32", storage, &[("WG", WG)], x, (6, xf), n)
}

/// Records `feat[0..n] = φ(x[first..first + n])` for an elementwise feature map (FMAP id).
pub(crate) fn record_map_features(
    s: &mut Schedule<'_>,
    storage: Storage,
    fmap: u32,
    x: (Bind<'_>, u32),
    feat: &wgpu::Buffer,
    n: u64,
) -> Result<()> {
    let consts = [("WG", WG), ("FMAP", fmap)];
    record_elementwise(s, "map_features", storage, &consts, x, (3, feat), n)
}

/// One elementwise pass of `favor.wgsl` over `n` elements: x at slot 1, the f32 result at `out`.
fn record_elementwise(
    s: &mut Schedule<'_>,
    entry: &'static str,
    storage: Storage,
    consts: &[(&'static str, u32)],
    x: (Bind<'_>, u32),
    (slot, out): (u32, &wgpu::Buffer),
    n: u64,
) -> Result<()> {
    let ctx = s.context();
    let p = ctx.pipelines.get(ctx, "favor", entry, storage, consts)?;
    let prm = Params {
        x_off: x.1,
        total: n as u32,
        ..Zeroable::zeroed()
    };
    s.dispatch(
        &p,
        &prm,
        &[x.0, whole(slot, out, n * 4).0],
        n.div_ceil(WG as u64),
    )
}

/// Performer attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]`,
/// `omega: [M, Dk]` f32 -> `o: [.., L, Dv]` in the inputs' dtype (f16 storage keeps f32 features,
/// state and accumulation). ω is used exactly as given; draw one with [`draw_omega`].
///
/// Errors: [`Error::Shape`] for mismatched shapes or ω not `[M, Dk]`, [`Error::InvalidArgument`]
/// for M = 0, [`Error::TooLarge`] when one (batch, head) row does not fit a storage binding.
pub fn favor_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    opts: &FavorOptions,
) -> Result<Tensor<T>> {
    let dims = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    favor_attention_into(ctx, q, k, v, omega, &out, opts)?;
    Ok(out)
}

/// [`favor_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn favor_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    out: &Tensor<T>,
    opts: &FavorOptions,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_favor_attention(&mut s, q, k, v, omega, out, opts)?;
        s.submit();
        Ok(())
    })
}

/// Records [`favor_attention`] into a [`Schedule`].
pub fn record_favor_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    out: &Tensor<T>,
    opts: &FavorOptions,
) -> Result<()> {
    record_favor(s, q, k, v, omega, out, opts.kind, opts.causal, None)
}

/// Where a prefill writes each row's final state: S `[R, F, Dv]`, z `[R, F]`, log-scale `[R]`.
pub(crate) struct StateOut<'a> {
    pub s: &'a wgpu::Buffer,
    pub z: &'a wgpu::Buffer,
    pub c: &'a wgpu::Buffer,
}

/// The FAVOR pipeline; with `state`, also the state after the last row (prefill, causal).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_favor<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    out: &Tensor<T>,
    kind: FavorKind,
    causal: bool,
    state: Option<StateOut<'_>>,
) -> Result<()> {
    let ctx = s.context();
    let d = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    let m = check_omega(OP, omega.shape(), d.dk)? as u64;
    super::softmax::check_out(OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let is_f32 = T::DTYPE == crate::DType::F32;
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let f = kind.num_features(m as usize) as u64;
    let es = size_of::<T>() as u64;
    let st_bytes = core_state_bytes(ctx, len, f, dv);
    let per = rows_per_pass(
        ctx,
        OP,
        &[
            ("q", len * dk * es),
            ("v", len * dv * 4),
            ("features", len * f * 4),
            ("state", st_bytes),
            ("S", f * dv * 4),
        ],
        d.rows,
    )?;
    let rows_max = per.min(d.rows) as u64;
    let fq = scratch(ctx, rows_max * len * f * 4);
    let fk = scratch(ctx, rows_max * len * f * 4);
    let logs = scratch(ctx, rows_max * len * 4);
    let head = scratch(ctx, rows_max * 4);
    let vf = (!is_f32).then(|| scratch(ctx, rows_max * len * dv * 4));
    let of = (!is_f32).then(|| scratch(ctx, rows_max * len * dv * 4));
    let core = Core {
        len,
        dk: f,
        dv,
        causal,
        denominator: true,
        eps: 0.0,
    };
    let mut r0 = 0u64;
    while r0 < d.rows as u64 {
        let nr = (per as u64).min(d.rows as u64 - r0);
        let sizes = (nr, len, dk, m);
        let xq = Bind::elems(ctx, 1, q.buffer(), es, r0 * len * dk, nr * len * dk);
        record_features(
            s,
            storage,
            kind,
            xq,
            omega.buffer(),
            sizes,
            &fq,
            &logs,
            None,
        )?;
        let xk = Bind::elems(ctx, 1, k.buffer(), es, r0 * len * dk, nr * len * dk);
        let h = match &state {
            Some(st) => Bind::elems(ctx, 5, st.c, 4, r0, nr),
            None => whole(5, &head, nr * 4),
        };
        record_features(
            s,
            storage,
            kind,
            xk,
            omega.buffer(),
            sizes,
            &fk,
            &logs,
            Some(h),
        )?;
        let vb = match &vf {
            Some(buf) => {
                let xv = Bind::elems(ctx, 1, v.buffer(), es, r0 * len * dv, nr * len * dv);
                record_cast_f32(s, storage, xv, buf, nr * len * dv)?;
                whole(3, buf, nr * len * dv * 4)
            }
            None => Bind::elems(ctx, 3, v.buffer(), 4, r0 * len * dv, nr * len * dv),
        };
        let o = match &of {
            Some(buf) => whole(5, buf, nr * len * dv * 4),
            None => Bind::elems(ctx, 5, out.buffer(), 4, r0 * len * dv, nr * len * dv),
        };
        let total = state.as_ref().map(|st| {
            (
                Bind::elems(ctx, 6, st.s, 4, r0 * f * dv, nr * f * dv),
                Bind::elems(ctx, 7, st.z, 4, r0 * f, nr * f),
            )
        });
        let binds = CoreBinds {
            q: whole(1, &fq, nr * len * f * 4),
            k: whole(2, &fk, nr * len * f * 4),
            v: vb,
            o,
            totals: total,
        };
        record_core(s, Storage::F32, 2, &core, nr, &binds)?;
        if let Some(buf) = &of {
            record_pack_f16(s, buf, out.buffer(), r0 * len * dv, nr * len * dv)?;
        }
        r0 += nr;
    }
    Ok(())
}

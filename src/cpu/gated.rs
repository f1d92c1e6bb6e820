//! The gated chunk engine of the CPU path, shared by GLA (a log-gate per key channel) and
//! Mamba-2's SSD (one scalar log-decay per step and head; C = q, B = k, X = v, scale 1):
//!
//! ```text
//! S_t = diag(exp g_t) S_{t−1} + k_tᵀ v_t      (S: [Dk, Dv] per lane; g_t ≤ 0)
//! o_t = scale · q_t S_t
//! ```
//!
//! One lane is one (sequence, head); lanes run in parallel (rayon). A lane walks its sequence in
//! chunks of c steps; with `F_t = g_{t0} + … + g_t` (running, inclusive) and `R_t = g_{t+1} + … +
//! g_{end}` (running, exclusive) inside the chunk:
//! `O = (Q ∘ e^F) S_in + (A ∘ M) V`, `S_out = diag(e^{F_end}) S_in + (K ∘ e^R)ᵀ V`, the products
//! by sgemm. The intra-chunk weights `M_ts = exp(g_{s+1} + … + g_t)` are summed from t backwards
//! (never a difference of cumulative sums, never `exp(−Σg)`): every exponent is ≤ 0, so g down to
//! −30 per step neither overflows nor costs a weight near 1 its precision. Scalar gate: `A = Q Kᵀ`
//! (sgemm), masked by M, chunks of 64. Per-key gate: `A_ts = Σ_d q_t[d] k_s[d] M_ts[d]`, chunks of
//! 16 (the exponentials grow as c² Dk per chunk).

use rayon::prelude::*;

use crate::cpu::{exp_nonpos, sgemm, Mat, MatMut};
use crate::types::batch::CuSeqlens;

/// How the log-gate g is shaped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// One value per step (SSD's A): g row width 1.
    Scalar,
    /// One value per key channel (GLA's g): g row width Dk.
    PerKey,
}

/// Where a lane's operand lives: row t (its `width` values) at `base + t · ts`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub base: usize,
    pub ts: usize,
}

/// One (sequence, head): its operands, length and state slot (`[.., Dk, Dv]` index).
#[derive(Clone, Copy)]
pub(crate) struct Lane {
    pub q: Operand,
    pub k: Operand,
    pub v: Operand,
    pub g: Operand,
    pub out: Operand,
    pub len: usize,
    pub state: usize,
}

/// The f32 operands of one call.
pub(crate) struct Engine<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub g: &'a [f32],
    pub h0: Option<&'a [f32]>,
    pub dk: usize,
    pub dv: usize,
    pub gate: Gate,
    pub scale: f32,
}

/// A (sequence or batch entry, head, first token, length, state slot) of a call.
#[derive(Clone, Copy)]
pub(crate) struct Seq {
    pub b: usize,
    pub h: usize,
    pub t0: usize,
    pub len: usize,
    pub slot: usize,
}

/// Every (batch entry, head) over the full length, or with `cu` (B = 1) every (sequence, head);
/// slot = entry · heads + head.
pub(crate) fn seqs(batch: usize, heads: usize, len: usize, cu: Option<&CuSeqlens>) -> Vec<Seq> {
    let ranges: Vec<(usize, usize, usize)> = match cu {
        Some(cu) => (0..cu.count())
            .map(|i| (0, cu.range(i).start, cu.range(i).len()))
            .collect(),
        None => (0..batch).map(|b| (b, 0, len)).collect(),
    };
    ranges
        .iter()
        .enumerate()
        .flat_map(|(i, &(b, t0, len))| {
            (0..heads).map(move |h| Seq {
                b,
                h,
                t0,
                len,
                slot: i * heads + h,
            })
        })
        .collect()
}

impl Engine<'_> {
    /// Runs every lane; writes row t of lane i to `out[lane.out.base + t · ts..][..Dv]` and its
    /// final state to `last[lane.state · Dk · Dv..]`. Rows of `out` no lane covers are untouched.
    pub fn run(&self, lanes: &[Lane], out: &mut [f32], last: &mut [f32]) {
        let (dk, dv) = (self.dk, self.dv);
        let done: Vec<(Vec<f32>, Vec<f32>)> = lanes.par_iter().map(|l| self.lane(l)).collect();
        for (l, (o, s)) in lanes.iter().zip(done) {
            for t in 0..l.len {
                out[l.out.base + t * l.out.ts..][..dv].copy_from_slice(&o[t * dv..][..dv]);
            }
            last[l.state * dk * dv..][..dk * dv].copy_from_slice(&s);
        }
    }

    /// One lane: `(o: [len, Dv], final state: [Dk, Dv])`.
    fn lane(&self, ln: &Lane) -> (Vec<f32>, Vec<f32>) {
        let (dk, dv) = (self.dk, self.dv);
        let (cmax, gw) = match self.gate {
            Gate::Scalar => (64, 1),
            Gate::PerKey => (16, dk),
        };
        let mut s = match self.h0 {
            Some(h0) => h0[ln.state * dk * dv..][..dk * dv].to_vec(),
            None => vec![0.0; dk * dv],
        };
        let mut out = vec![0.0f32; ln.len * dv];
        let mut w = Work::new(cmax, dk, dv, gw);
        for t0 in (0..ln.len).step_by(cmax) {
            let c = cmax.min(ln.len - t0);
            self.chunk(ln, t0, c, &mut w, &mut s, &mut out[t0 * dv..][..c * dv]);
        }
        (out, s)
    }

    /// One chunk of c steps from t0: its outputs into `o: [c, Dv]`, the state carried in `s`.
    fn chunk(&self, ln: &Lane, t0: usize, c: usize, w: &mut Work, s: &mut [f32], o: &mut [f32]) {
        let (dk, dv, gw) = (self.dk, self.dv, w.gw);
        let rows = |x: &[f32], op: Operand, width: usize, dst: &mut [f32]| {
            for i in 0..c {
                dst[i * width..][..width]
                    .copy_from_slice(&x[op.base + (t0 + i) * op.ts..][..width]);
            }
        };
        rows(self.q, ln.q, dk, &mut w.q);
        rows(self.k, ln.k, dk, &mut w.k);
        rows(self.v, ln.v, dv, &mut w.v);
        rows(self.g, ln.g, gw, &mut w.g);
        w.q[..c * dk].iter_mut().for_each(|x| *x *= self.scale);
        // Running sums of g, forward inclusive (F) and backward exclusive (R).
        for j in 0..gw {
            let mut acc = 0.0;
            for i in 0..c {
                acc += w.g[i * gw + j];
                w.f[i * gw + j] = acc;
            }
            let mut r = 0.0;
            for i in (0..c).rev() {
                w.r[i * gw + j] = r;
                r += w.g[i * gw + j];
            }
        }
        for i in 0..c {
            for d in 0..dk {
                let j = i * gw + if gw == 1 { 0 } else { d };
                w.qd[i * dk + d] = w.q[i * dk + d] * exp_nonpos(w.f[j]);
                w.kd[i * dk + d] = w.k[i * dk + d] * exp_nonpos(w.r[j]);
            }
        }
        let finite = |x: &[f32]| x.iter().all(|v| v.is_finite());
        let all_finite = finite(&w.q[..c * dk])
            && finite(&w.k[..c * dk])
            && finite(&w.v[..c * dv])
            && finite(&w.g[..c * gw]);
        if !all_finite {
            // The recurrence's NaN/±Inf pattern: the chunk's products would add 0·Inf above the
            // diagonal and sum ±Inf terms in another order.
            return self.steps(c, w, s, o);
        }
        // Inter-chunk: the state in, decayed to each step.
        let qd = Mat::rm(&w.qd, c, dk, dk);
        sgemm(qd, Mat::rm(s, dk, dv, dv), 0.0, MatMut::rm(o, c, dv, dv));
        self.coefficients(c, w);
        let a = Mat::rm(&w.a, c, c, c);
        sgemm(a, Mat::rm(&w.v, c, dv, dv), 1.0, MatMut::rm(o, c, dv, dv));
        // S ← diag(e^{F_end}) S + (K ∘ e^R)ᵀ V.
        for d in 0..dk {
            let decay = exp_nonpos(w.f[(c - 1) * gw + if gw == 1 { 0 } else { d }]);
            s[d * dv..][..dv].iter_mut().for_each(|x| *x *= decay);
        }
        let kd = Mat::rm(&w.kd, c, dk, dk).t();
        sgemm(kd, Mat::rm(&w.v, c, dv, dv), 1.0, MatMut::rm(s, dk, dv, dv));
    }

    /// A chunk step by step, `S_t = diag(e^{g_t}) S_{t−1} + k_tᵀ v_t`, `o_t = q_t S_t` (q scaled):
    /// the definition's order, for chunks holding a non-finite value.
    fn steps(&self, c: usize, w: &Work, s: &mut [f32], o: &mut [f32]) {
        let (dk, dv, gw) = (self.dk, self.dv, w.gw);
        for t in 0..c {
            for d in 0..dk {
                let decay = w.g[t * gw + if gw == 1 { 0 } else { d }].exp();
                let kd = w.k[t * dk + d];
                for (x, &v) in s[d * dv..][..dv].iter_mut().zip(&w.v[t * dv..][..dv]) {
                    *x = decay * *x + kd * v;
                }
            }
            let ot = &mut o[t * dv..][..dv];
            ot.fill(0.0);
            for d in 0..dk {
                let qd = w.q[t * dk + d];
                for (y, &x) in ot.iter_mut().zip(&s[d * dv..][..dv]) {
                    *y += qd * x;
                }
            }
        }
    }

    /// The masked intra-chunk coefficients `w.a: [c, c]` (zero above the diagonal), each weight's
    /// exponent summed from t backwards.
    fn coefficients(&self, c: usize, w: &mut Work) {
        let (dk, gw) = (self.dk, w.gw);
        match self.gate {
            Gate::Scalar => {
                let q = Mat::rm(&w.q, c, dk, dk);
                let k = Mat::rm(&w.k, c, dk, dk).t();
                sgemm(q, k, 0.0, MatMut::rm(&mut w.a, c, c, c));
                for t in 0..c {
                    let row = &mut w.a[t * c..][..c];
                    let mut lg = 0.0;
                    for (r, &g) in row[..=t].iter_mut().zip(&w.g[..=t]).rev() {
                        *r *= exp_nonpos(lg);
                        lg += g;
                    }
                    row[t + 1..].fill(0.0);
                }
            }
            Gate::PerKey => {
                for t in 0..c {
                    let lg = &mut w.lg[..dk];
                    lg.fill(0.0);
                    let qt = &w.q[t * dk..][..dk];
                    for s in (0..=t).rev() {
                        let (ks, gs) = (&w.k[s * dk..][..dk], &w.g[s * gw..][..dk]);
                        let mut sum = 0.0;
                        for (((l, &q), &k), &g) in lg.iter_mut().zip(qt).zip(ks).zip(gs) {
                            sum += q * k * exp_nonpos(*l);
                            *l += g;
                        }
                        w.a[t * c + s] = sum;
                    }
                    w.a[t * c + t + 1..][..c - t - 1].fill(0.0);
                }
            }
        }
    }
}

/// A lane's chunk buffers.
struct Work {
    gw: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    f: Vec<f32>,
    r: Vec<f32>,
    qd: Vec<f32>,
    kd: Vec<f32>,
    a: Vec<f32>,
    lg: Vec<f32>,
}

impl Work {
    fn new(c: usize, dk: usize, dv: usize, gw: usize) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        Self {
            gw,
            q: z(c * dk),
            k: z(c * dk),
            v: z(c * dv),
            g: z(c * gw),
            f: z(c * gw),
            r: z(c * gw),
            qd: z(c * dk),
            kd: z(c * dk),
            a: z(c * c),
            lg: z(dk),
        }
    }
}

/// The number of state slots: `batch`, or N sequences when `cu` is given (which needs B = 1 and
/// offsets within `len`).
pub(crate) fn check_cu(
    op: &'static str,
    batch: usize,
    len: usize,
    cu: Option<&CuSeqlens>,
) -> crate::Result<usize> {
    let Some(cu) = cu else { return Ok(batch) };
    let bad = |reason: String| crate::Error::InvalidArgument {
        op,
        name: "cu_seqlens",
        reason,
    };
    if batch != 1 {
        return Err(bad(format!(
            "needs batch 1 (packed sequences), got {batch}"
        )));
    }
    let last = *cu.offsets().last().unwrap_or(&0) as usize;
    if last > len {
        return Err(bad(format!("last offset {last} is past the length {len}")));
    }
    Ok(cu.count())
}

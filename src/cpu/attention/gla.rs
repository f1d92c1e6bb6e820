//! Gated linear attention on the CPU path (Yang et al. 2024, arXiv 2312.06635, §4):
//! `S_t = diag(exp g_t) S_{t−1} + k_tᵀ v_t`, `o_t = scale · q_t S_t`, by the gated chunk engine
//! ([`crate::cpu::gated`]) with a per-key gate. f32 arithmetic, rayon over (batch or sequence,
//! head); either layout, packed sequences. Reference: [`crate::reference::gla`].

use crate::cpu::gated::{seqs, Engine, Gate, Lane, Operand, Seq};
use crate::cpu::{check_len, load, store};
use crate::types::batch::{CuSeqlens, Layout};
use crate::{Element, Error, Result};

const OP: &str = "cpu::gla";

/// The sizes of a GLA call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlaShape {
    /// Batch B (1 with cu_seqlens).
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Length L (the packed length with cu_seqlens).
    pub len: usize,
    /// Key (and gate) dim Dk.
    pub dk: usize,
    /// Value dim Dv.
    pub dv: usize,
}

/// Host inputs of [`gla`]: the fields of [`crate::attention::GlaInputs`], as slices.
#[derive(Clone, Copy)]
pub struct GlaHost<'a, T: Element> {
    /// `q: [B, H, L, Dk]` (or `[B, L, H, Dk]` with [`Layout::Blhd`]).
    pub q: &'a [T],
    /// `k`, like q.
    pub k: &'a [T],
    /// `v: [B, H, L, Dv]` (or `[B, L, H, Dv]`).
    pub v: &'a [T],
    /// `g`, like q: log forget gates (≤ 0).
    pub g: &'a [T],
    /// `initial_state: [B, H, Dk, Dv]`, or `[N, H, Dk, Dv]` with cu_seqlens (zero when absent).
    pub initial_state: Option<&'a [f32]>,
    /// The output scale; `None`: Dk^−1/2.
    pub scale: Option<f32>,
    /// Memory order of q, k, v, g and o.
    pub layout: Layout,
    /// Packed sequences along L (B = 1): each starts from its own initial state.
    pub cu_seqlens: Option<&'a CuSeqlens>,
}

impl<'a, T: Element> GlaHost<'a, T> {
    /// q, k, v, g in `[B, H, L, D]`; no state, scale Dk^−1/2, no cu_seqlens.
    pub fn new(q: &'a [T], k: &'a [T], v: &'a [T], g: &'a [T]) -> Self {
        Self {
            q,
            k,
            v,
            g,
            initial_state: None,
            scale: None,
            layout: Layout::Bhld,
            cu_seqlens: None,
        }
    }
}

/// q, k, g, v of `s` → `(o` in T and the inputs' layout, `final_state: [B, H, Dk, Dv]` f32; with
/// cu_seqlens `[N, H, Dk, Dv]`). Tokens past the last offset get o = 0. Errors:
/// [`Error::InvalidArgument`] for a zero size, a non-finite scale, cu_seqlens with B ≠ 1 or past
/// L, [`Error::DataLength`] for a slice that does not hold its shape.
pub fn gla<T: Element>(s: GlaShape, x: &GlaHost<'_, T>) -> Result<(Vec<T>, Vec<f32>)> {
    let GlaShape {
        batch,
        heads,
        len,
        dk,
        dv,
    } = s;
    if [batch, heads, len, dk, dv].contains(&0) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "dims",
            reason: format!("every size must be >= 1, got {s:?}"),
        });
    }
    let scale = x.scale.unwrap_or(1.0 / (dk as f32).sqrt());
    if !scale.is_finite() {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "scale",
            reason: format!("{scale} is not finite"),
        });
    }
    let nseq = crate::cpu::gated::check_cu(OP, batch, len, x.cu_seqlens)?;
    let shape = |d: usize| x.layout.shape(batch, heads, len, d);
    check_len(x.q, &shape(dk))?;
    check_len(x.k, &shape(dk))?;
    check_len(x.g, &shape(dk))?;
    check_len(x.v, &shape(dv))?;
    if let Some(h0) = x.initial_state {
        check_len(h0, &[nseq, heads, dk, dv])?;
    }
    let (q, k, v, g) = (load(x.q), load(x.k), load(x.v), load(x.g));
    let at = |d: usize, s: &Seq| {
        let st = x.layout.strides(heads, len, d);
        Operand {
            base: st.index(s.b, s.h, s.t0, 0),
            ts: st.token,
        }
    };
    let lanes: Vec<Lane> = seqs(batch, heads, len, x.cu_seqlens)
        .iter()
        .map(|s| Lane {
            q: at(dk, s),
            k: at(dk, s),
            v: at(dv, s),
            g: at(dk, s),
            out: at(dv, s),
            len: s.len,
            state: s.slot,
        })
        .collect();
    let engine = Engine {
        q: &q,
        k: &k,
        v: &v,
        g: &g,
        h0: x.initial_state,
        dk,
        dv,
        gate: Gate::PerKey,
        scale,
    };
    let mut o = vec![0.0f32; batch * heads * len * dv];
    let mut last = vec![0.0f32; nseq * heads * dk * dv];
    engine.run(&lanes, &mut o, &mut last);
    let mut ot = vec![T::from_f64(0.0); o.len()];
    store(&o, &mut ot);
    Ok((ot, last))
}

//! Mamba-2's SSD on the CPU path (Dao & Gu 2024, arXiv 2405.21060, §6–7):
//! `H_t = exp(A_t) H_{t−1} + B_tᵀ x_t`, `y_t = C_t H_t`, by the gated chunk engine
//! ([`crate::cpu::gated`]) with a scalar gate: C = q, B = k, X = v, scale 1. f32 arithmetic,
//! rayon over (batch or sequence, head). Reference: [`crate::reference::ssd`].

use crate::cpu::gated::{seqs, Engine, Gate, Lane, Operand};
use crate::cpu::{check_len, load, store};
pub use crate::reference::ssd::SsdDims;
use crate::types::batch::CuSeqlens;
use crate::{Element, Error, Result};

const OP: &str = "cpu::ssd";

/// Host inputs of [`ssd`]: the fields and layouts of [`crate::ssm::SsdInputs`], as slices.
#[derive(Clone, Copy)]
pub struct SsdHost<'a, T: Element> {
    /// `X: [b, l, h, p]`.
    pub x: &'a [T],
    /// `A: [b, l, h]`, log-decays (≤ 0).
    pub a: &'a [T],
    /// `B: [b, l, h, n]`.
    pub b: &'a [T],
    /// `C: [b, l, h, n]`.
    pub c: &'a [T],
    /// `initial_state: [b, h, n, p]`, or `[N, h, n, p]` with `cu_seqlens` (zero when absent).
    pub initial_state: Option<&'a [f32]>,
    /// Packed sequences along l (b = 1): each starts from its own initial state.
    pub cu_seqlens: Option<&'a CuSeqlens>,
}

impl<'a, T: Element> SsdHost<'a, T> {
    /// X, A, B, C; no initial state, no cu_seqlens.
    pub fn new(x: &'a [T], a: &'a [T], b: &'a [T], c: &'a [T]) -> Self {
        Self {
            x,
            a,
            b,
            c,
            initial_state: None,
            cu_seqlens: None,
        }
    }
}

/// `X, A, B, C` of `dims` → `(Y: [b, l, h, p]` in T, `final_state: [b, h, n, p]` f32; with
/// cu_seqlens `[N, h, n, p]`). Tokens past the last offset get Y = 0. Errors:
/// [`Error::InvalidArgument`] for a zero size or cu_seqlens with b ≠ 1 or past l,
/// [`Error::DataLength`] for a slice that does not hold its shape.
pub fn ssd<T: Element>(dims: SsdDims, x: &SsdHost<'_, T>) -> Result<(Vec<T>, Vec<f32>)> {
    let SsdDims {
        batch,
        len,
        heads: h,
        head_dim: p,
        state: n,
    } = dims;
    if [batch, len, h, p, n].contains(&0) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "dims",
            reason: format!("every size must be >= 1, got {dims:?}"),
        });
    }
    let nseq = crate::cpu::gated::check_cu(OP, batch, len, x.cu_seqlens)?;
    check_len(x.x, &[batch, len, h, p])?;
    check_len(x.a, &[batch, len, h])?;
    check_len(x.b, &[batch, len, h, n])?;
    check_len(x.c, &[batch, len, h, n])?;
    if let Some(h0) = x.initial_state {
        check_len(h0, &[nseq, h, n, p])?;
    }
    let (xs, a, b, c) = (load(x.x), load(x.a), load(x.b), load(x.c));
    let at = |width: usize, s: &crate::cpu::gated::Seq| Operand {
        base: ((s.b * len + s.t0) * h + s.h) * width,
        ts: h * width,
    };
    let lanes: Vec<Lane> = seqs(batch, h, len, x.cu_seqlens)
        .iter()
        .map(|s| Lane {
            q: at(n, s),
            k: at(n, s),
            v: at(p, s),
            g: at(1, s),
            out: at(p, s),
            len: s.len,
            state: s.slot,
        })
        .collect();
    let engine = Engine {
        q: &c,
        k: &b,
        v: &xs,
        g: &a,
        h0: x.initial_state,
        dk: n,
        dv: p,
        gate: Gate::Scalar,
        scale: 1.0,
    };
    let mut y = vec![0.0f32; batch * len * h * p];
    let mut last = vec![0.0f32; nseq * h * n * p];
    engine.run(&lanes, &mut y, &mut last);
    let mut yt = vec![T::from_f64(0.0); y.len()];
    store(&y, &mut yt);
    Ok((yt, last))
}

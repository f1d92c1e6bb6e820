//! Mamba-2's state-space duality layer (SSD; Dao & Gu 2024, *Transformers are SSMs*, arXiv
//! 2405.21060, §6–7) in the chunked (block) form of the paper's minimal implementation:
//!
//! ```text
//! H_t = exp(A_t) H_{t−1} + B_tᵀ x_t        (H: [n, p] per (batch, head); A_t a log-decay)
//! y_t = C_t H_t
//! ```
//!
//! SSD is gated linear attention with one gate per step and head (C = q, B = k, X = v, A = g,
//! Dk = n, Dv = p, scale 1, the `[b, l, h, ·]` layout), so it runs on GLA's chunk engine
//! ([`crate::attention::gla`], shaders/gla.wgsl, in its scalar-gate form): chunks of [`CHUNK`]
//! steps, the intra-chunk output the decay-masked `(C Bᵀ ∘ L) X` (the quadratic, attention-like
//! form inside a chunk), each chunk's state from zero `Σ_s exp(A_{s+1} + … + A_end) B_sᵀ x_s`,
//! an associative scan (that of [`super::selective_scan`], blocks of chunks per invocation, level
//! upon level) carrying the states across chunks, and each output adding
//! `exp(A_start + … + A_t) C_t H_in`. Decay exponents are running sums inside a chunk, never
//! differences of a cumulative sum, so a strong decay (A down to −30 per step) neither overflows
//! nor costs the precision of the weights near 1. No loop in the shader grows with l. Arithmetic
//! and states f32; storage f32 or f16. Reference: [`crate::reference::ssd`].

use crate::attention::gla::{Dims, Gated};
use crate::driver;
use crate::schedule::Schedule;
use crate::types::batch::{CuSeqlens, Layout};
use crate::{Context, Element, Error, Result, Tensor};

/// Steps per chunk (the block length of the block decomposition).
pub const CHUNK: usize = crate::attention::gla::CHUNK;

const OP: &str = "ssd";

/// Inputs of [`ssd`], in the layout of Mamba-2's minimal SSD (`ssd_minimal_discrete`).
#[derive(Clone, Copy)]
pub struct SsdInputs<'a, T: Element> {
    /// `X: [b, l, h, p]`.
    pub x: &'a Tensor<T>,
    /// `A: [b, l, h]`, the log-decay of every step and head (Mamba-2's `A · dt`). It should be
    /// ≤ 0: a positive A grows the state as `exp(ΣA)` and can overflow f32.
    pub a: &'a Tensor<T>,
    /// `B: [b, l, h, n]`.
    pub b: &'a Tensor<T>,
    /// `C: [b, l, h, n]`.
    pub c: &'a Tensor<T>,
    /// `initial_state: [b, h, n, p]` f32, or `[N, h, n, p]` with `cu_seqlens` (zero when absent).
    pub initial_state: Option<&'a Tensor<f32>>,
    /// Packed sequences along l (b = 1): sequence i is steps `[offsets[i], offsets[i + 1])` and
    /// runs from its own initial state; `final_state` is then `[N, h, n, p]`. Y past the last
    /// offset is left untouched. Each sequence is its own set of dispatches (one submission).
    pub cu_seqlens: Option<&'a CuSeqlens>,
}

impl<'a, T: Element> SsdInputs<'a, T> {
    /// X, A, B, C without an initial state.
    pub fn new(x: &'a Tensor<T>, a: &'a Tensor<T>, b: &'a Tensor<T>, c: &'a Tensor<T>) -> Self {
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

/// `X: [b, l, h, p]`, `A: [b, l, h]`, `B, C: [b, l, h, n]` → `Y: [b, l, h, p]` (dtype T) and
/// `final_state: [b, h, n, p]` (f32; `[N, h, n, p]` with cu_seqlens), any sizes ≥ 1 (a ragged
/// last chunk included). Errors: [`Error::Shape`] for shapes that do not fit these,
/// [`Error::InvalidArgument`] for cu_seqlens with b ≠ 1 or past l, [`Error::WrongContext`],
/// [`Error::TooLarge`] when one batch's inputs and scratch exceed a storage binding.
pub fn ssd<T: Element>(ctx: &Context, x: &SsdInputs<'_, T>) -> Result<(Tensor<T>, Tensor<f32>)> {
    let d = check(x)?;
    let last = Tensor::<f32>::empty(ctx, &[d.slots, d.heads, d.dk, d.dv])?;
    let y = driver::run(ctx, &engine(x, &last, d))?;
    Ok((y, last))
}

/// [`ssd`] into existing `y: [b, l, h, p]` and `final_state: [b, h, n, p]` (which must not be
/// `initial_state`).
pub fn ssd_into<T: Element>(
    ctx: &Context,
    x: &SsdInputs<'_, T>,
    y: &Tensor<T>,
    final_state: &Tensor<f32>,
) -> Result<()> {
    driver::run_into(ctx, &engine(x, final_state, check(x)?), y)
}

/// Records [`ssd_into`] into a [`Schedule`].
pub fn record_ssd<T: Element>(
    s: &mut Schedule<'_>,
    x: &SsdInputs<'_, T>,
    y: &Tensor<T>,
    final_state: &Tensor<f32>,
) -> Result<()> {
    driver::record(s, &engine(x, final_state, check(x)?), y)
}

/// The chunk engine's call: C = q, B = k, X = v, A = g (one channel), `[b, l, h, ·]`, scale 1.
fn engine<'a, T: Element>(
    x: &SsdInputs<'a, T>,
    last: &'a Tensor<f32>,
    d: Dims,
) -> Gated<'a, T, true> {
    Gated {
        op: OP,
        names: ["C", "B", "X", "A"],
        q: x.c,
        k: x.b,
        v: x.x,
        g: x.a,
        gd: 1,
        initial_state: x.initial_state,
        last,
        scale: 1.0,
        layout: Layout::Blhd,
        cu_seqlens: x.cu_seqlens,
        d,
    }
}

fn shape_is(name: &'static str, got: &[usize], want: &[usize], what: &str) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::Shape {
        op: OP,
        name,
        expected: format!("{want:?} ({what})"),
        got: got.to_vec(),
    })
}

/// Every input shape against X's b, l, h, p and B's n (Dk = n, Dv = p).
fn check<T: Element>(x: &SsdInputs<'_, T>) -> Result<Dims> {
    let xs = x.x.shape();
    if xs.len() != 4 || xs.contains(&0) {
        return Err(Error::Shape {
            op: OP,
            name: "X",
            expected: "[b, l, h, p] with every dim >= 1".into(),
            got: xs.to_vec(),
        });
    }
    let (b, l, h, p) = (xs[0], xs[1], xs[2], xs[3]);
    shape_is("A", x.a.shape(), &[b, l, h], "[b, l, h], from X")?;
    let bs = x.b.shape();
    if bs.len() != 4 || bs[..3] != [b, l, h] || bs[3] == 0 {
        return Err(Error::Shape {
            op: OP,
            name: "B",
            expected: format!("[{b}, {l}, {h}, n] ([b, l, h, n], n >= 1)"),
            got: bs.to_vec(),
        });
    }
    let n = bs[3];
    shape_is("C", x.c.shape(), &[b, l, h, n], "[b, l, h, n], like B")?;
    let slots = crate::cpu::gated::check_cu(OP, b, l, x.cu_seqlens)?;
    if let Some(h0) = x.initial_state {
        let what = "[b, h, n, p] ([N, h, n, p] with cu_seqlens)";
        shape_is("initial_state", h0.shape(), &[slots, h, n, p], what)?;
    }
    Ok(Dims {
        batch: b,
        slots,
        heads: h,
        len: l,
        dk: n,
        dv: p,
    })
}

//! Real-world batches for the S4D scan and convolution (issue 14): `u` and `y` as `[B, H, L]` or
//! sequence-first `[B, L, H]` (read through strides in the kernels), packed variable-length
//! sequences (`cu_seqlens`, B = 1), and the state in and out, so a sequence processed in two calls
//! equals one call.
//!
//! The state of sequence i is `x: [N, H, N2, 2]` f32: for each head and stored mode n the complex
//! `x_n` as (re, im), the same form as [`super::s4d_step`]'s. The conjugate modes are not stored
//! (`y = 2 Re Σ_n C_n x_n + D u`). N is B, or the number of packed sequences.
//!
//! The scan needs no change to its combine: a sequence's first token enters as
//! `(a, b) = (0, Ā x0 + B̄ u)`, which drops every prefix before it. The convolution mode takes
//! the same options and gives the same outputs ([`super::s4d_conv_batch`]).

use super::kernel::{DiagonalSsm, Discretization};
use super::scan::S4dScan;
use crate::bind::upload_u32;
use crate::driver::{self, Input};
use crate::types::batch::{CuSeqlens, Layout};
use crate::{Context, Element, Error, Result, Tensor};

/// How `u` is laid out and split into sequences, and the state entering them.
#[derive(Clone, Copy, Default)]
pub struct S4dBatch<'a> {
    /// [`Layout::Bhld`]: `u, y: [B, H, L]`; [`Layout::Blhd`]: `[B, L, H]` (the D axis is absent).
    pub layout: Layout,
    /// Packed sequences (B = 1): sequence i holds tokens `[cu[i], cu[i + 1])`; each starts from
    /// its own state and nothing crosses a boundary; `y` past the last offset is left untouched.
    pub cu_seqlens: Option<&'a CuSeqlens>,
    /// The state before each sequence's first token, `[N, H, N2, 2]` f32 (none: zero).
    pub initial_state: Option<&'a Tensor<f32>>,
}

/// [`S4dBatch`] with the final-state output, as the kernels take it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Resolved<'a> {
    pub layout: Layout,
    pub cu: Option<&'a CuSeqlens>,
    pub initial: Option<&'a Tensor<f32>>,
    pub final_state: Option<&'a Tensor<f32>>,
}

impl<'a> Resolved<'a> {
    pub fn new(b: &S4dBatch<'a>, final_state: Option<&'a Tensor<f32>>) -> Self {
        Self {
            layout: b.layout,
            cu: b.cu_seqlens,
            initial: b.initial_state,
            final_state,
        }
    }

    /// Checks `u` (rank 3 in the layout, H heads) and the states; returns (B, L).
    pub fn dims(
        &self,
        op: &'static str,
        u: &[usize],
        h: usize,
        n2: usize,
    ) -> Result<(usize, usize)> {
        let pattern = match self.layout {
            Layout::Bhld => "[B, H, L]",
            Layout::Blhd => "[B, L, H]",
        };
        let (b, uh, len) = match (u.len(), self.layout) {
            (3, Layout::Bhld) => (u[0], u[1], u[2]),
            (3, Layout::Blhd) => (u[0], u[2], u[1]),
            _ => (0, 0, 0),
        };
        if uh != h || u.contains(&0) || b == 0 {
            return Err(Error::Shape {
                op,
                name: "u",
                expected: format!("{pattern} with H = {h}, every dim >= 1"),
                got: u.to_vec(),
            });
        }
        let n = match self.cu {
            Some(_) if b != 1 => {
                return Err(Error::Shape {
                    op,
                    name: "u",
                    expected: format!("{pattern} with B = 1 (packed sequences)"),
                    got: u.to_vec(),
                })
            }
            Some(cu) => {
                // A CuSeqlens is checked against the L it was built for; this u may differ.
                let last = *cu.offsets().last().expect("N + 1 >= 2 offsets") as usize;
                if last > len {
                    return Err(Error::InvalidArgument {
                        op,
                        name: "cu_seqlens",
                        reason: format!("last offset {last} is past the packed length L = {len}"),
                    });
                }
                cu.count()
            }
            None => b,
        };
        let want = [n, h, n2, 2];
        for (name, t) in [
            ("initial_state", self.initial),
            ("final_state", self.final_state),
        ] {
            if let Some(t) = t {
                if t.shape() != want {
                    return Err(Error::Shape {
                        op,
                        name,
                        expected: format!("{want:?} ([N, H, N2, (re, im)])"),
                        got: t.shape().to_vec(),
                    });
                }
            }
        }
        if let (Some(a), Some(b)) = (self.initial, self.final_state) {
            if a.buffer() == b.buffer() {
                return Err(Error::InvalidArgument {
                    op,
                    name: "final_state",
                    reason: "aliases input `initial_state`".into(),
                });
            }
        }
        Ok((b, len))
    }

    /// Rows per pass come in whole batch entries when heads are not contiguous.
    pub fn row_group(&self, h: usize) -> u64 {
        match self.layout {
            Layout::Bhld => 1,
            Layout::Blhd => h as u64,
        }
    }

    /// (head stride, token stride) of u and y.
    pub fn strides(&self, h: u64, len: u64) -> (u32, u32) {
        match self.layout {
            Layout::Bhld => (len as u32, 1),
            Layout::Blhd => (1, h as u32),
        }
    }

    /// (N for packed sequences else 0, the shaders' sequence flags).
    pub fn seq_flags(&self) -> (u32, u32) {
        let n = self.cu.map_or(0, |c| c.count() as u32);
        (
            n,
            self.cu.is_some() as u32 | (self.initial.is_some() as u32) << 1,
        )
    }

    /// The packed-sequence table: the N + 1 offsets, then each token's sequence (u32::MAX past
    /// the last offset).
    pub fn seq_table(&self, ctx: &Context, len: usize) -> Option<wgpu::Buffer> {
        let cu = self.cu?;
        let mut t: Vec<u32> = cu.offsets().to_vec();
        let mut tok = vec![u32::MAX; len];
        for i in 0..cu.count() {
            for x in &mut tok[cu.range(i)] {
                *x = i as u32;
            }
        }
        t.extend(tok);
        Some(upload_u32(ctx, &t))
    }

    pub fn inputs(&self) -> Vec<Input<'a>> {
        let mut i = Vec::new();
        i.extend(self.initial.map(|t| Input::of("initial_state", t)));
        i.extend(self.final_state.map(|t| Input::of("final_state", t)));
        i
    }
}

/// The number of sequences N and the state shape `[N, H, N2, 2]` for `u` in `b`'s layout.
pub(super) fn state_shape<T: Element>(
    op: &'static str,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    b: &S4dBatch<'_>,
) -> Result<[usize; 4]> {
    let (h, n2) = ssm.dims(op)?;
    let (bb, _) = Resolved::new(b, None).dims(op, u.shape(), h, n2)?;
    let n = b.cu_seqlens.map_or(bb, |c| c.count());
    Ok([n, h, n2, 2])
}

const SCAN: &str = "s4d_scan";

/// The S4D recurrent mode by parallel scan over a batch in `b`'s layout, from each sequence's
/// initial state: `x_t = Ā x_{t−1} + B̄ u_t` (`x_{−1}` = the initial state or 0),
/// `y_t = 2 Re Σ_n C_n x_{n,t} + D u_t` (Gu et al. 2022, arXiv 2206.11893). Returns `y` shaped
/// like u and the final state `[N, H, N2, 2]` (the state after each sequence's last token; an
/// empty sequence's is its initial state). Feeding it back as `initial_state` continues the
/// sequences: two calls equal one.
///
/// # Errors
/// [`Error::Shape`] (u, the states, B ≠ 1 with packed sequences), [`Error::InvalidArgument`]
/// (cu_seqlens past L), and those of [`super::s4d_scan`].
pub fn s4d_scan_batch<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    disc: Discretization,
    b: &S4dBatch<'_>,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let fin = Tensor::<f32>::empty(ctx, &state_shape(SCAN, ssm, u, b)?)?;
    let y = Tensor::empty(ctx, u.shape())?;
    s4d_scan_batch_into(ctx, ssm, u, disc, b, (&y, &fin))?;
    Ok((y, fin))
}

/// [`s4d_scan_batch`] into existing `y` (shaped like u; with packed sequences, its tokens past
/// the last offset keep their values) and `final_state: [N, H, N2, 2]`.
pub fn s4d_scan_batch_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    disc: Discretization,
    b: &S4dBatch<'_>,
    (y, final_state): (&Tensor<T>, &Tensor<f32>),
) -> Result<()> {
    let op = S4dScan {
        ssm,
        u,
        disc,
        batch: Resolved::new(b, Some(final_state)),
    };
    driver::run_into(ctx, &op, y)
}

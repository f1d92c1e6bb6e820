//! Recurrent (decoding) mode of causal linear attention on the CPU path (Katharopoulos et al.
//! 2020, eqs. 16-20): `S_i = S_{i−1} + φ(K_i) V_iᵀ`, `z_i = z_{i−1} + φ(K_i)`,
//! `O_i = φ(Q_i)ᵀ S_i / (φ(Q_i)ᵀ z_i + ε)`. The host mirror of [`crate::attention::recurrent`]:
//! [`prefill`] runs the chunked causal form over a prefix and returns the state after it,
//! [`step`] advances it by one position; prefill then steps equals the causal output.
//!
//! The state is f32 `S: [R, F, Dv]`, `z: [R, F]` and a log-scale `c: [R]` standing for `e^c·S`,
//! `e^c·z`. Elementwise maps keep c = 0; FAVOR keys are stabilised by the largest key
//! log-feature seen so far, and a step that brings a larger one rescales S and z by `e^(c−c')`.

use rayon::prelude::*;

use super::favor::features as favor_features;
use super::linear::linear_row;
use super::{map_features, phi};
use crate::attention::favor::check_omega;
use crate::attention::linear::AttnDims;
use crate::attention::{FavorKind, LinearAttentionOptions};
use crate::cpu::{check_len, load, sgemm, store, Mat, MatMut};
use crate::types::attention::check_rows_options;
use crate::{Element, Error, Result};

const OP: &str = "cpu::recurrent";

/// The feature map of a recurrent state (host ω).
#[derive(Clone, Debug)]
pub enum Features {
    /// Elementwise φ with linear attention's ε and denominator switch (`causal` is ignored).
    Linear(LinearAttentionOptions),
    /// FAVOR features with `omega: [M, Dk]` row-major f32; no ε, denominator guard.
    Favor {
        /// ω: [M, Dk], row-major.
        omega: Vec<f32>,
        /// Positive (FAVOR+) or trigonometric features.
        kind: FavorKind,
    },
}

impl Features {
    /// F for head dim `dk`; checks ω and the options.
    fn num_features(&self, dk: usize) -> Result<usize> {
        match self {
            Features::Linear(o) => {
                check_rows_options(OP, o)?;
                Ok(dk)
            }
            Features::Favor { omega, kind } => {
                let m = omega.len() / dk.max(1);
                check_omega(OP, &[m, dk], dk)?;
                if m == 0 || omega.len() != m * dk {
                    return Err(Error::DataLength {
                        shape: vec![m, dk],
                        expected: m.max(1) * dk,
                        got: omega.len(),
                    });
                }
                Ok(kind.num_features(m))
            }
        }
    }
    fn denominator(&self) -> Option<f32> {
        match self {
            Features::Linear(o) => o.denominator.then_some(o.eps),
            Features::Favor { .. } => Some(0.0),
        }
    }
}

/// The decoding state of R = B·H heads.
#[derive(Clone, Debug)]
pub struct RecurrentState {
    features: Features,
    lead: Vec<usize>,
    dk: usize,
    dv: usize,
    f: usize,
    /// `[.., F, Dv]`
    pub s: Vec<f32>,
    /// `[.., F]`
    pub z: Vec<f32>,
    /// `[..]`
    pub log_scale: Vec<f32>,
}

impl RecurrentState {
    /// The state before any position (S = 0, z = 0, c = f32::MIN) for leading dims `lead`
    /// (`[H]` or `[B, H]`) and head dims `dk`, `dv`.
    pub fn empty(features: &Features, lead: &[usize], dk: usize, dv: usize) -> Result<Self> {
        let f = features.num_features(dk)?;
        if lead.is_empty() || lead.len() > 2 || lead.contains(&0) || dv == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "lead",
                reason: format!("leading dims {lead:?} must be [H] or [B, H], each >= 1, Dv >= 1"),
            });
        }
        let r: usize = lead.iter().product();
        Ok(Self {
            features: features.clone(),
            lead: lead.to_vec(),
            dk,
            dv,
            f,
            s: vec![0.0; r * f * dv],
            z: vec![0.0; r * f],
            log_scale: vec![f32::MIN; r],
        })
    }

    /// The feature map this state was made with.
    pub fn features(&self) -> &Features {
        &self.features
    }
    /// The leading dims `[B, H]` or `[H]`.
    pub fn lead(&self) -> &[usize] {
        &self.lead
    }
}

/// Key (per head) or query (per row) features of `x: [L, Dk]` and the head's stabiliser.
fn feats(fe: &Features, x: &[f32], dk: usize, keys: bool) -> (Vec<f32>, f32) {
    match fe {
        Features::Linear(o) => (map_features(o.feature_map, x), 0.0),
        Features::Favor { omega, kind } => favor_features(x, dk, omega, *kind, keys),
    }
}

/// Causal attention over a prefix `q, k: [R, L, Dk]`, `v: [R, L, Dv]` (shapes in `d`, leading
/// dims `d.out_shape[..rank−2]`) -> (`o` in the inputs' dtype, the state after position L−1).
pub fn prefill<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    features: &Features,
) -> Result<(Vec<T>, RecurrentState)> {
    let lead = &d.out_shape[..d.out_shape.len() - 2];
    let mut st = RecurrentState::empty(features, lead, d.dk, d.dv)?;
    let (r, l, dk, dv, f) = (d.rows, d.len, d.dk, d.dv, st.f);
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    let (q, k, v) = (load(q), load(k), load(v));
    let den = features.denominator();
    let mut out = vec![T::from_f64(0.0); r * l * dv];
    out.par_chunks_mut(l * dv)
        .zip(st.s.par_chunks_mut(f * dv))
        .zip(st.z.par_chunks_mut(f).zip(st.log_scale.par_iter_mut()))
        .enumerate()
        .for_each(|(row, ((o, s), (z, c)))| {
            let (fq, _) = feats(features, &q[row * l * dk..][..l * dk], dk, false);
            let (fk, ck) = feats(features, &k[row * l * dk..][..l * dk], dk, true);
            let vr = &v[row * l * dv..][..l * dv];
            let mut o32 = vec![0.0f32; l * dv];
            linear_row(&fq, &fk, vr, (l, f, dv), true, den, &mut o32);
            store(&o32, o);
            sgemm(
                Mat::rm(&fk, l, f, f).t(),
                Mat::rm(vr, l, dv, dv),
                0.0,
                MatMut::rm(s, f, dv, dv),
            );
            for row_k in fk.chunks(f) {
                z.iter_mut().zip(row_k).for_each(|(a, b)| *a += b);
            }
            *c = ck;
        });
    Ok((out, st))
}

/// One decoding step: `q_t, k_t: [.., Dk]`, `v_t: [.., Dv]` (the state's leading dims) ->
/// `o_t: [.., Dv]` in the inputs' dtype, advancing `state` by one position.
/// Errors: [`crate::Error::DataLength`] when a slice does not match the state.
pub fn step<T: Element>(
    state: &mut RecurrentState,
    q_t: &[T],
    k_t: &[T],
    v_t: &[T],
) -> Result<Vec<T>> {
    let (dk, dv, f) = (state.dk, state.dv, state.f);
    let lead = state.lead.clone();
    check_len(q_t, &[&lead[..], &[dk]].concat())?;
    check_len(k_t, &[&lead[..], &[dk]].concat())?;
    check_len(v_t, &[&lead[..], &[dv]].concat())?;
    let (q, k, v) = (load(q_t), load(k_t), load(v_t));
    let fe = state.features.clone();
    let den = fe.denominator();
    let r = state.log_scale.len();
    let mut out32 = vec![0.0f32; r * dv];
    out32
        .par_chunks_mut(dv)
        .zip(state.s.par_chunks_mut(f * dv))
        .zip(
            state
                .z
                .par_chunks_mut(f)
                .zip(state.log_scale.par_iter_mut()),
        )
        .enumerate()
        .for_each(|(row, ((o, s), (z, c)))| {
            let (qr, kr, vr) = (
                &q[row * dk..][..dk],
                &k[row * dk..][..dk],
                &v[row * dv..][..dv],
            );
            let (fq, fk) = match &fe {
                Features::Linear(opts) => {
                    let m = |x: &[f32]| x.iter().map(|&a| phi(opts.feature_map, a)).collect();
                    (m(qr), m(kr))
                }
                Features::Favor { omega, kind } => favor_step(omega, *kind, qr, kr, s, z, c),
            };
            for (i, &p) in fk.iter().enumerate() {
                s[i * dv..][..dv]
                    .iter_mut()
                    .zip(vr)
                    .for_each(|(a, b)| *a += p * b);
                z[i] += p;
            }
            let mut acc = vec![0.0f32; dv + 1];
            for (i, &p) in fq.iter().enumerate() {
                acc[..dv]
                    .iter_mut()
                    .zip(&s[i * dv..][..dv])
                    .for_each(|(a, b)| *a += p * b);
                acc[dv] += p * z[i];
            }
            super::linear::finish(&acc, dv + 1, dv, den, o);
        });
    let mut out = vec![T::from_f64(0.0); r * dv];
    store(&out32, &mut out);
    Ok(out)
}

/// FAVOR features of one query and one key; rescales the head's `S`, `z` when the key raises
/// the stabiliser `c`.
fn favor_step(
    omega: &[f32],
    kind: FavorKind,
    q: &[f32],
    k: &[f32],
    s: &mut [f32],
    z: &mut [f32],
    c: &mut f32,
) -> (Vec<f32>, Vec<f32>) {
    let dk = q.len();
    let (fq, _) = favor_features(q, dk, omega, kind, false);
    // The key's own stabiliser is its largest log-feature: features times e^(own − c').
    let (mut fk, own) = favor_features(k, dk, omega, kind, true);
    let c_new = c.max(own);
    if c_new > *c {
        let g = (*c - c_new).exp();
        s.iter_mut().for_each(|x| *x *= g);
        z.iter_mut().for_each(|x| *x *= g);
        *c = c_new;
    }
    let g = (own - c_new).exp();
    fk.iter_mut().for_each(|x| *x *= g);
    (fq, fk)
}

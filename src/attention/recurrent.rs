//! Recurrent (decoding) mode of causal linear attention (Katharopoulos et al. 2020, *Transformers
//! are RNNs*, arXiv 2006.16236, eqs. 16-20): `S_i = S_{i−1} + φ(K_i) V_iᵀ`, `z_i = z_{i−1} + φ(K_i)`,
//! `O_i = φ(Q_i)ᵀ S_i / (φ(Q_i)ᵀ z_i + ε)`.
//!
//! [`prefill`] runs the chunked causal form over a prefix and returns the state after its last
//! row; [`step`] then advances it by one position. Prefill of a prefix followed by steps over the
//! rest equals the causal output on the whole sequence, for every feature map.
//!
//! The state is f32: `S: [.., F, Dv]`, `z: [.., F]`, and a log-scale `c: [..]`; the sums it stands
//! for are `e^c·S` and `e^c·z`. For elementwise maps c stays 0. For FAVOR features the keys are
//! stabilised by c (the largest key log-feature seen so far); when a step brings a larger one, S
//! and z are rescaled by `e^(c−c')` (as the running maximum of an online softmax), so a step never
//! overflows and the ratio is unchanged.

use bytemuck::{Pod, Zeroable};

use super::favor::{check_omega, record_favor, record_features, record_map_features, StateOut};
use super::linear::record_linear;
use super::{FavorKind, LinearAttentionOptions};
use crate::bind::{scratch, Bind};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
use crate::types::attention::{check_options, check_shapes};
use crate::{Context, Element, Error, Result, Tensor};

/// The feature map of a recurrent state.
#[derive(Clone)]
pub enum Features {
    /// Elementwise φ with linear attention's ε and denominator switch (`causal` is ignored:
    /// decoding is causal).
    Linear(LinearAttentionOptions),
    /// FAVOR features with `omega: [M, Dk]` f32 (see [`super::favor`]); no ε, denominator guard.
    Favor { omega: Tensor<f32>, kind: FavorKind },
}

impl Features {
    /// F, the feature dim, for inputs of head dim `dk`; checks ω and the options.
    fn num_features(&self, op: &'static str, dk: usize) -> Result<usize> {
        match self {
            Features::Linear(o) => {
                check_options(op, o)?;
                Ok(dk)
            }
            Features::Favor { omega, kind } => {
                Ok(kind.num_features(check_omega(op, omega.shape(), dk)?))
            }
        }
    }
    fn eps_den(&self) -> (f32, bool) {
        match self {
            Features::Linear(o) => (o.eps, o.denominator),
            Features::Favor { .. } => (0.0, true),
        }
    }
}

/// The decoding state of `R = B·H` heads: `s: [.., F, Dv]`, `z: [.., F]`, `log_scale: [..]`, f32.
pub struct RecurrentState {
    features: Features,
    dk: usize,
    dv: usize,
    pub s: Tensor<f32>,
    pub z: Tensor<f32>,
    pub log_scale: Tensor<f32>,
}

impl RecurrentState {
    /// The state before any position: S = 0, z = 0, c = f32::MIN. `lead` are the leading dims
    /// (`[B, H]` or `[H]`), `dk`, `dv` the head dims of q/k and v.
    pub fn empty(
        ctx: &Context,
        features: &Features,
        lead: &[usize],
        dk: usize,
        dv: usize,
    ) -> Result<Self> {
        let f = features.num_features("RecurrentState::empty", dk)?;
        if lead.is_empty() || lead.len() > 2 || lead.contains(&0) || dv == 0 {
            return Err(Error::InvalidArgument {
                op: "RecurrentState::empty",
                name: "lead",
                reason: format!("leading dims {lead:?} must be [H] or [B, H], each >= 1, Dv >= 1"),
            });
        }
        Self::alloc(ctx, features, lead, dk, dv, f, f32::MIN)
    }

    fn alloc(
        ctx: &Context,
        features: &Features,
        lead: &[usize],
        dk: usize,
        dv: usize,
        f: usize,
        c: f32,
    ) -> Result<Self> {
        let rows: usize = lead.iter().product();
        let shape = |tail: &[usize]| [lead, tail].concat();
        Ok(Self {
            features: features.clone(),
            dk,
            dv,
            s: Tensor::from_slice(ctx, &vec![0.0; rows * f * dv], &shape(&[f, dv]))?,
            z: Tensor::from_slice(ctx, &vec![0.0; rows * f], &shape(&[f]))?,
            log_scale: Tensor::from_slice(ctx, &vec![c; rows], lead)?,
        })
    }

    pub fn features(&self) -> &Features {
        &self.features
    }
    /// The leading dims `[B, H]` or `[H]`.
    pub fn lead(&self) -> &[usize] {
        self.log_scale.shape()
    }
}

/// Causal attention over a prefix `q, k: [.., L, Dk]`, `v: [.., L, Dv]` -> (`o: [.., L, Dv]`,
/// the state after position L−1). Errors as [`super::linear_attention`] /
/// [`super::favor_attention`].
pub fn prefill<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    features: &Features,
) -> Result<(Tensor<T>, RecurrentState)> {
    const OP: &str = "prefill";
    let d = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    let f = features.num_features(OP, d.dk)?;
    let lead = &q.shape()[..q.shape().len() - 2];
    let state = RecurrentState::alloc(ctx, features, lead, d.dk, d.dv, f, 0.0)?;
    let out = Tensor::empty(ctx, &d.out_shape)?;
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        match features {
            Features::Linear(o) => {
                let o = LinearAttentionOptions { causal: true, ..*o };
                let st = Some((state.s.buffer(), state.z.buffer()));
                record_linear(&mut s, q, k, v, &out, &o, st)?;
            }
            Features::Favor { omega, kind } => {
                let st = StateOut {
                    s: state.s.buffer(),
                    z: state.z.buffer(),
                    c: state.log_scale.buffer(),
                };
                record_favor(&mut s, q, k, v, omega, &out, *kind, true, Some(st))?;
            }
        }
        s.submit();
        Ok(())
    })?;
    Ok((out, state))
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    f: u32,
    dv: u32,
    flags: u32,
    eps: f32,
    v_off: u32,
    o_off: u32,
    s_off: u32,
    z_off: u32,
    c_off: u32,
    total: u32,
    _pad: u32,
}

const WG: u32 = 64;

/// One decoding step: `q_t, k_t: [.., Dk]`, `v_t: [.., Dv]` (the state's leading dims) ->
/// `o_t: [.., Dv]`, advancing `state` by one position.
///
/// Errors: [`Error::Shape`] when a shape does not match the state.
pub fn step<T: Element>(
    ctx: &Context,
    state: &mut RecurrentState,
    q_t: &Tensor<T>,
    k_t: &Tensor<T>,
    v_t: &Tensor<T>,
) -> Result<Tensor<T>> {
    const OP: &str = "step";
    let lead = state.lead().to_vec();
    let (dk, dv) = (state.dk as u64, state.dv as u64);
    for (name, t, n) in [("q_t", q_t, dk), ("k_t", k_t, dk), ("v_t", v_t, dv)] {
        let want = [lead.as_slice(), &[n as usize]].concat();
        if t.shape() != want.as_slice() {
            return Err(Error::Shape {
                op: OP,
                name,
                expected: format!("{want:?} (the state's leading dims, then D)"),
                got: t.shape().to_vec(),
            });
        }
    }
    let out = Tensor::<T>::empty(ctx, &[lead.as_slice(), &[dv as usize]].concat())?;
    let rows = lead.iter().product::<usize>() as u64;
    let f = state.features.num_features(OP, dk as usize)? as u64;
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let es = size_of::<T>() as u64;
    let per = rows_per_pass(
        ctx,
        OP,
        &[("S", f * dv * 4), ("features", f * 4)],
        rows as usize,
    )? as u64;
    let rows_max = per.min(rows);
    let fq = scratch(ctx, rows_max * f * 4);
    let fk = scratch(ctx, rows_max * f * 4);
    let lq = scratch(ctx, rows_max * 4);
    let ck = scratch(ctx, rows_max * 4); // stays 0 for elementwise maps
    let of = (storage == Storage::F16Packed).then(|| scratch(ctx, rows_max * dv * 4));
    let (eps, den) = state.features.eps_den();
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let mut r0 = 0;
        while r0 < rows {
            let nr = per.min(rows - r0);
            let xq = Bind::elems(ctx, 1, q_t.buffer(), es, r0 * dk, nr * dk);
            let xk = Bind::elems(ctx, 1, k_t.buffer(), es, r0 * dk, nr * dk);
            match &state.features {
                Features::Linear(o) => {
                    let id = o.feature_map.shader_id();
                    record_map_features(&mut s, storage, id, xq, &fq, nr * dk)?;
                    record_map_features(&mut s, storage, id, xk, &fk, nr * dk)?;
                }
                Features::Favor { omega, kind } => {
                    let sizes = (nr, 1, dk, omega.shape()[0] as u64);
                    let w = omega.buffer();
                    record_features(&mut s, storage, *kind, xq, w, sizes, &fq, &lq, None)?;
                    record_features(&mut s, storage, *kind, xk, w, sizes, &fk, &ck, None)?;
                }
            }
            let (bv, v_off) = Bind::elems(ctx, 4, v_t.buffer(), es, r0 * dv, nr * dv);
            let (bs, s_off) = Bind::elems(ctx, 5, state.s.buffer(), 4, r0 * f * dv, nr * f * dv);
            let (bz, z_off) = Bind::elems(ctx, 6, state.z.buffer(), 4, r0 * f, nr * f);
            let (bc, c_off) = Bind::elems(ctx, 7, state.log_scale.buffer(), 4, r0, nr);
            let (bo, o_off) = match &of {
                Some(buf) => Bind::prefix_at(8, buf, nr * dv * 4),
                None => Bind::elems(ctx, 8, out.buffer(), es, r0 * dv, nr * dv),
            };
            let mut prm = Params {
                rows: nr as u32,
                f: f as u32,
                dv: dv as u32,
                flags: den as u32,
                eps,
                v_off,
                o_off,
                s_off,
                z_off,
                c_off,
                total: (nr * (f * dv + f)) as u32,
                _pad: 0,
            };
            let pl = |e| {
                ctx.pipelines
                    .get(ctx, "recurrent", e, storage, &[("WG", WG)])
            };
            let (bfq, bfk, bck) = (
                Bind::prefix_at(1, &fq, nr * f * 4).0,
                Bind::prefix_at(2, &fk, nr * f * 4).0,
                Bind::prefix_at(3, &ck, nr * 4).0,
            );
            let groups = (nr * (f * dv + f)).div_ceil(WG as u64);
            s.dispatch(
                &*pl("step_update")?,
                &prm,
                &[bfk, bck, bv, bs, bz, bc],
                groups,
            )?;
            prm.total = nr as u32;
            s.dispatch(&*pl("step_output")?, &prm, &[bfq, bck, bs, bz, bc, bo], nr)?;
            if let Some(buf) = &of {
                record_pack_f16(&mut s, buf, out.buffer(), r0 * dv, nr * dv)?;
            }
            r0 += nr;
        }
        s.submit();
        Ok(())
    })?;
    Ok(out)
}

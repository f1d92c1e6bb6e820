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

use super::favor::{check_omega, record_features, record_map_features, Favor, StateOut};
use super::linear::Linear;
use super::{FavorKind, FavorOptions, LinearAttentionOptions};
use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::Schedule;
use crate::types::attention::{check_rows_options, check_shapes};
use crate::{Context, Element, Error, Result, Tensor};

/// The feature map of a recurrent state.
#[derive(Clone)]
pub enum Features {
    /// Elementwise φ with linear attention's ε and denominator switch (`causal` is ignored:
    /// decoding is causal).
    Linear(LinearAttentionOptions),
    /// FAVOR features with `omega: [M, Dk]` f32 (see [`super::favor`]); no ε, denominator guard.
    Favor {
        /// ω: `[M, Dk]` f32.
        omega: Tensor<f32>,
        /// Positive (FAVOR+) or trigonometric features.
        kind: FavorKind,
    },
}

impl Features {
    /// F, the feature dim, for inputs of head dim `dk`; checks ω and the options.
    fn num_features(&self, op: &'static str, dk: usize) -> Result<usize> {
        match self {
            Features::Linear(o) => {
                check_rows_options(op, o)?;
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
    /// Σ φ(k) vᵀ so far, scaled by `exp(−log_scale)`: `[.., F, Dv]`.
    pub s: Tensor<f32>,
    /// Σ φ(k) so far, same scale: `[.., F]`.
    pub z: Tensor<f32>,
    /// The log of the common scale of `s` and `z` per head (FAVOR's running key maximum): `[..]`.
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

    /// Which features this state was built for.
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
    let d = check_shapes(PREFILL, q.shape(), k.shape(), v.shape())?;
    let f = features.num_features(PREFILL, d.dk)?;
    let lead = &q.shape()[..q.shape().len() - 2];
    let state = RecurrentState::alloc(ctx, features, lead, d.dk, d.dv, f, 0.0)?;
    let out = Tensor::empty(ctx, &d.out_shape)?;
    prefill_into(ctx, q, k, v, &out, &state)?;
    Ok((out, state))
}

/// [`prefill`] writing `out: [.., L, Dv]` and overwriting `state` (made for these leading dims
/// and head dims, e.g. by [`RecurrentState::empty`]), one submission.
pub fn prefill_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    state: &RecurrentState,
) -> Result<()> {
    driver::submit(ctx, |s| record_prefill(s, q, k, v, out, state))
}

/// Records [`prefill_into`] into a [`Schedule`].
pub fn record_prefill<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    state: &RecurrentState,
) -> Result<()> {
    let d = check_shapes(PREFILL, q.shape(), k.shape(), v.shape())?;
    let lead = &q.shape()[..q.shape().len() - 2];
    if state.lead() != lead || state.dk != d.dk || state.dv != d.dv {
        return Err(Error::Shape {
            op: PREFILL,
            name: "state",
            expected: format!(
                "a state of leading dims {lead:?}, Dk = {}, Dv = {}",
                d.dk, d.dv
            ),
            got: [state.lead(), &[state.dk, state.dv]].concat(),
        });
    }
    match &state.features {
        Features::Linear(o) if o.layout != crate::types::Layout::Bhld => {
            Err(Error::InvalidArgument {
                op: PREFILL,
                name: "layout",
                reason: "recurrent decoding takes [B, H, L, D] (Layout::Bhld) only".into(),
            })
        }
        Features::Linear(o) => {
            // Elementwise features carry no log-scale: the state is S, z themselves.
            s.clear(state.log_scale.buffer());
            let mut op = Linear::new(q, k, v, &LinearAttentionOptions { causal: true, ..*o });
            op.state = Some((state.s.buffer(), state.z.buffer()));
            driver::record(s, &op, out)
        }
        Features::Favor { omega, kind } => {
            let opts = FavorOptions {
                kind: *kind,
                causal: true,
            };
            let mut op = Favor::new(q, k, v, omega, &opts);
            op.state = Some(StateOut {
                s: state.s.buffer(),
                z: state.z.buffer(),
                c: state.log_scale.buffer(),
            });
            driver::record(s, &op, out)
        }
    }
}

const PREFILL: &str = "prefill";

crate::uniform! {
    /// The `Params` uniform of shaders/recurrent.wgsl.
    pub(crate) struct Params {
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
    driver::run(
        ctx,
        &Step {
            state,
            q_t,
            k_t,
            v_t,
        },
    )
}

/// [`step`] writing into an existing `out: [.., Dv]`, one submission.
pub fn step_into<T: Element>(
    ctx: &Context,
    state: &mut RecurrentState,
    q_t: &Tensor<T>,
    k_t: &Tensor<T>,
    v_t: &Tensor<T>,
    out: &Tensor<T>,
) -> Result<()> {
    driver::run_into(
        ctx,
        &Step {
            state,
            q_t,
            k_t,
            v_t,
        },
        out,
    )
}

/// Records [`step`] into a [`Schedule`].
pub fn record_step<T: Element>(
    s: &mut Schedule<'_>,
    state: &mut RecurrentState,
    q_t: &Tensor<T>,
    k_t: &Tensor<T>,
    v_t: &Tensor<T>,
    out: &Tensor<T>,
) -> Result<()> {
    driver::record(
        s,
        &Step {
            state,
            q_t,
            k_t,
            v_t,
        },
        out,
    )
}

const STEP: &str = "step";

struct Step<'a, T: Element> {
    state: &'a RecurrentState,
    q_t: &'a Tensor<T>,
    k_t: &'a Tensor<T>,
    v_t: &'a Tensor<T>,
}

impl<T: Element> RowOp for Step<'_, T> {
    type T = T;
    /// F.
    type Dims = u64;
    const NAME: &'static str = STEP;

    fn plan(&self, _: &Context) -> Result<(u64, Plan)> {
        let st = self.state;
        let lead = st.lead();
        for (name, t, n) in [
            ("q_t", self.q_t, st.dk),
            ("k_t", self.k_t, st.dk),
            ("v_t", self.v_t, st.dv),
        ] {
            let want = [lead, &[n]].concat();
            if t.shape() != want.as_slice() {
                return Err(Error::Shape {
                    op: STEP,
                    name,
                    expected: format!("{want:?} (the state's leading dims, then D)"),
                    got: t.shape().to_vec(),
                });
            }
        }
        let f = st.features.num_features(STEP, st.dk)? as u64;
        let dv = st.dv as u64;
        let rows = lead.iter().product::<usize>() as u64;
        let plan = Plan::new([lead, &[st.dv]].concat(), rows, dv)
            .bytes("S", f * dv * 4)
            .bytes("features", f * 4);
        Ok((f, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let st = self.state;
        vec![
            Input::of("q_t", self.q_t),
            Input::of("k_t", self.k_t),
            Input::of("v_t", self.v_t),
            Input::of("state.s", &st.s),
            Input::of("state.z", &st.z),
            Input::of("state.log_scale", &st.log_scale),
        ]
    }

    fn record_rows(&self, s: &mut Schedule<'_>, f: &u64, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (st, f, storage) = (self.state, *f, p.storage);
        let (dk, dv) = (st.dk as u64, st.dv as u64);
        let (r0, nr, es) = (p.r0, p.nr, size_of::<T>() as u64);
        let fq = scratch(ctx, nr * f * 4);
        let fk = scratch(ctx, nr * f * 4);
        let lq = scratch(ctx, nr * 4);
        let ck = scratch(ctx, nr * 4); // stays 0 for elementwise maps
        let xq = Bind::elems(ctx, 1, self.q_t.buffer(), es, r0 * dk, nr * dk);
        let xk = Bind::elems(ctx, 1, self.k_t.buffer(), es, r0 * dk, nr * dk);
        match &st.features {
            Features::Linear(o) => {
                let id = o.feature_map.shader_id();
                record_map_features(s, storage, id, xq, &fq, nr * dk)?;
                record_map_features(s, storage, id, xk, &fk, nr * dk)?;
            }
            Features::Favor { omega, kind } => {
                let sizes = (nr, 1, dk, omega.shape()[0] as u64);
                let w = omega.buffer();
                record_features(s, storage, *kind, xq, w, sizes, &fq, &lq, None)?;
                record_features(s, storage, *kind, xk, w, sizes, &fk, &ck, None)?;
            }
        }
        let (eps, den) = st.features.eps_den();
        let (bv, v_off) = Bind::elems(ctx, 4, self.v_t.buffer(), es, r0 * dv, nr * dv);
        let (bs, s_off) = Bind::elems(ctx, 5, st.s.buffer(), 4, r0 * f * dv, nr * f * dv);
        let (bz, z_off) = Bind::elems(ctx, 6, st.z.buffer(), 4, r0 * f, nr * f);
        let (bc, c_off) = Bind::elems(ctx, 7, st.log_scale.buffer(), 4, r0, nr);
        let (bo, o_off) = p.out.bind(ctx, 8, nr * dv);
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
            Bind::prefix(1, &fq, nr * f * 4),
            Bind::prefix(2, &fk, nr * f * 4),
            Bind::prefix(3, &ck, nr * 4),
        );
        let groups = (nr * (f * dv + f)).div_ceil(WG as u64);
        let update = [bfk, bck, bv, bs, bz, bc];
        s.dispatch(&*pl("step_update")?, &prm, &update, groups)?;
        prm.total = nr as u32;
        s.dispatch(&*pl("step_output")?, &prm, &[bfq, bck, bs, bz, bc, bo], nr)
    }
}

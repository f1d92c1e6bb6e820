//! The FAVOR pipeline on dense rows (features, the chunk engine, the intra-chunk terms), shared
//! by [`super::favor`] (rows of `[R, L, D]` tensors, prefill) and [`super::favor_batch`] (one
//! sequence's dense copy, with the state in and out).

use super::chunk::{self, PassBinds};
use super::favor::trig::{self, Scales};
use super::favor::{
    core_job, record_cast_f32, record_extend_v, record_features, record_intra, record_positive,
    FavorKind, IntraW, StateOut,
};
use crate::bind::{scratch, Bind};
use crate::driver::OutSlot;
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::Result;

/// One run of the FAVOR pipeline on `nr` dense rows `[nr, len, D]` (q, k, v bound at slot 1 with
/// their element offsets, in `storage`), writing `[nr, len, Dv]` at `out`.
pub(crate) struct Core<'b> {
    pub kind: FavorKind,
    pub causal: bool,
    pub storage: Storage,
    pub omega: &'b wgpu::Buffer,
    /// (nr, len, Dk, Dv, M).
    pub sizes: (u64, u64, u64, u64, u64),
    /// q, k, v.
    pub x: [(Bind<'b>, u32); 3],
    /// Prefill: the state buffers and the index of the first row in them.
    pub prefill: Option<(&'b StateOut<'b>, u64)>,
    /// Causal positive features: the state in and out ([`super::favor_batch`]).
    pub carry: Option<super::favor_batch::Carry<'b>>,
}

/// Records [`Core`]: features, the chunk engine and (causal positive) the intra-chunk terms.
pub(crate) fn record_core(s: &mut Schedule<'_>, c: &Core<'_>, out: &OutSlot<'_>) -> Result<()> {
    let ctx = s.context();
    let (kind, storage) = (c.kind, c.storage);
    let (nr, len, dk, dv, m) = c.sizes;
    let f = kind.num_features(m as usize) as u64;
    let fq = scratch(ctx, nr * len * f * 4);
    let fk = scratch(ctx, nr * len * f * 4);
    let logs = scratch(ctx, nr * len * 4);
    let head = scratch(ctx, nr * 4);
    let sizes = (nr, len, dk, m);
    let w = c.omega;
    let [xq, xk, xv] = c.x;
    // Per-feature key stabilisers (positive); causal trig without a state out: one per chunk,
    // rows relative to their own running maximum (favor::trig); non-causal trig and prefill
    // (whose state keeps one log-scale per row for decoding) use the head-wide one. Causal, they
    // split the engine's work: earlier chunks through its state, the chunk's own keys in the log
    // domain (record_intra).
    let per_feature = kind == FavorKind::Positive && c.prefill.is_none();
    let trig = kind == FavorKind::Trig && c.causal && c.prefill.is_none() && c.carry.is_none();
    let split = (per_feature && c.causal) || trig;
    let job = core_job(len, f, dv, c.causal, split);
    let chunk = chunk::chunk_len(ctx, &job) as u64;
    let nc = len.div_ceil(chunk);
    let kmax = (per_feature || trig).then(|| scratch(ctx, nr * nc * f * 4));
    let scales = trig.then(|| Scales::new(ctx, nr, len, nc));
    let logits = split.then(|| {
        let n = nr * len * f * 4;
        (scratch(ctx, n), scratch(ctx, n))
    });
    let carry = c.carry.as_ref().filter(|_| split);
    if let (Some(km), Some(sc), Some((uq, uk))) = (&kmax, &scales, &logits) {
        let bufs = (&fq, &fk, km, &logs);
        trig::record_causal(s, storage, (xq, xk), w, sizes, bufs, (uq, uk), chunk, sc)?;
    } else if let Some(km) = &kmax {
        let bufs = (&fq, &fk, km, &logs);
        let lg = logits.as_ref().map(|(a, b)| (a, b));
        let m0 = carry.map(|k| k.init[0]);
        record_positive(s, storage, (xq, xk), w, sizes, bufs, (lg, chunk), m0)?;
    } else {
        record_features(s, storage, kind, xq, w, sizes, &fq, &logs, None)?;
        let h = match c.prefill {
            Some((st, r0)) => Bind::elems(ctx, 5, st.c, 4, r0, nr),
            None => Bind::prefix_at(5, &head, nr * 4),
        };
        record_features(s, storage, kind, xk, w, sizes, &fk, &logs, Some(h))?;
    }
    // The engine's values: [v | 1] when split, else v as f32.
    let vf = (split || storage != Storage::F32).then(|| scratch(ctx, nr * len * job.dv * 4));
    let vb = match &vf {
        Some(buf) if split => {
            record_extend_v(s, storage, xv, buf, (nr * len, dv))?;
            Bind::prefix_at(3, buf, nr * len * job.dv * 4)
        }
        Some(buf) => {
            record_cast_f32(s, storage, xv, buf, nr * len * dv)?;
            Bind::prefix_at(3, buf, nr * len * dv * 4)
        }
        None => (Bind { slot: 3, ..xv.0 }, xv.1),
    };
    let tot = carry.map(|_| (scratch(ctx, nr * f * job.dv * 4), scratch(ctx, nr * f * 4)));
    let totals = match (c.prefill, &tot) {
        (Some((st, r0)), _) => Some((
            Bind::elems(ctx, 6, st.s, 4, r0 * f * dv, nr * f * dv),
            Bind::elems(ctx, 7, st.z, 4, r0 * f, nr * f),
        )),
        (None, Some((ts, tz))) => Some((
            Bind::prefix_at(6, ts, nr * f * job.dv * 4),
            Bind::prefix_at(7, tz, nr * f * 4),
        )),
        _ => None,
    };
    let nd = split.then(|| scratch(ctx, nr * len * job.dv * 4));
    let binds = PassBinds {
        q: Bind::prefix_at(1, &fq, nr * len * f * 4),
        k: Bind::prefix_at(2, &fk, nr * len * f * 4),
        v: vb,
        o: match &nd {
            Some(nd) => Bind::prefix_at(11, nd, nr * len * job.dv * 4),
            None => out.bind(ctx, 11, nr * len * dv),
        },
        totals,
        initial: None,
    };
    let rescale = kmax.as_ref().filter(|_| c.causal);
    chunk::record_rows(s, &job, None, (0, nr), &binds, rescale)?;
    let (Some((lq, lk)), Some(nd), Some(xv)) = (&logits, &nd, &vf) else {
        return Ok(());
    };
    if let (Some(k), Some(km), Some((ts, _))) = (carry, &kmax, &tot) {
        use super::favor_batch::{record_final, record_initial};
        record_initial(s, k, (nr, len, dv, m), (lq, &logs), nd)?;
        record_final(s, k, (nr, nc, dv, m), km, ts)?;
    }
    let o = out.bind(ctx, 10, nr * len * dv);
    let weights = match &scales {
        Some(sc) => IntraW::Trig { uq: lq, uk: lk, sc },
        None => IntraW::Positive {
            lq,
            lk,
            logscale: &logs,
        },
    };
    record_intra(s, (nr, len, dv, m), chunk, weights, (xv, nd), o)
}

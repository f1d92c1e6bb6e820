// Exact softmax attention, tiled with the online softmax (Milakov & Gimelshein 2018; Dao et al. 2022):
// a running max m and sum l per query row, so no L x L buffer exists; memory is O(BQ * BK) per workgroup.
// q, k: [R, L, Dk]; v: [R, L, Dv]; o: [R, L, Dv], row-major, R = rows (batch x heads) in this pass.
// One workgroup per (row, query tile of BQ rows, column block of DVB = TPQ * NA columns of Dv).
// Per key tile: Q and K in chunks of DKC columns through workgroup memory (K transposed), each
// invocation holding SPT logits of its query in registers; then the online-softmax update.
// WMODE 1 (DiagAttention's relu variant) weighs keys by relu(logit) and writes the unnormalised sum.
// Position terms (longseq::attention::positional), all per (i, j) inside the tiles, no L x L buffer:
// sliding window j in (i - window, i]; logit s = scale * kappa_i * q_i.k_j - slope_h * |i - j| with
// kappa_i = max(1, ln n_i / ln L_train) (n_i = keys query i sees) and ALiBi slopes[h]; ReRoPE:
// q_i.k_j -> sum over rotary pairs of A cos(phi) - B sin(phi), phi = clamp(i - j, -w, w) * theta_p,
// A = qa ka + qb kb, B = qb ka - qa kb, cos/sin from rot: [2w + 1, D/2, 2] (host, f64 -> f32).
//
// Split-K: one dispatch sees only the keys [klo, khi) of a segment (the host bounds a segment so an
// invocation's loops stay far under llvmpipe's ~65 535 iterations per invocation, and so K/V of a
// segment fit a binding). A tile whose keys span several segments keeps (m, l, acc) in the f32 state
// buffer st between dispatches: its first segment starts from m = -inf, its last one writes o.
// A pass covers queries [q0, q0 + nq) of its rows: q, o and st hold [rows, nq, D] (rows = 1 or
// nq = L); k and v are bound from key klo of row 0 with row stride L.

override WG: u32 = 256u;   // invocations per workgroup = BQ * TPQ
override BQ: u32 = 32u;    // queries per tile
override BK: u32 = 32u;    // keys per tile = TPQ * SPT
override DKC: u32 = 32u;   // columns of Dk per chunk of the Q and K tiles
override WMODE: u32 = 0u;  // 0 softmax, 1 relu weights without normalisation
const NA: u32 = 8u;        // output columns accumulated per invocation
const SPT: u32 = 8u;       // logits per invocation

struct Params {
    rows: u32,
    len: u32,
    dk: u32,
    dv: u32,
    n_qt: u32,    // query tiles per row in this dispatch, from tile qt0 on
    n_cb: u32,    // column blocks of Dv
    flags: u32,   // bit 0 causal
    block: u32,   // DiagAttention block w; 0 = one block spanning L
    scale: f32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    total: u32,
    q0: u32,         // first query of this pass
    nq: u32,         // queries in this pass
    heads: u32,      // H: row r of the pass is head (r0 + r) % H
    r0: u32,
    window: u32,     // sliding window w; 0 = none
    pflags: u32,     // bit 0 ALiBi, bit 1 ReRoPE, bit 2 ReRoPE half-split layout
    logn_inv: f32,   // 1 / ln L_train; 0 = no log-n scale
    rw: u32,         // ReRoPE window
    klo: u32,        // keys of this dispatch: [klo, khi)
    khi: u32,
    ml_off: u32,     // where (m, l) pairs start in st
    neg_inf: f32,    // -inf from the host (WGSL constants must be finite)
    qt0: u32,        // first query tile of this dispatch (tiles that see no key of it are skipped)
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<OT>;
@group(0) @binding(5) var<storage, read> slopes: array<f32>;
@group(0) @binding(6) var<storage, read> rot: array<f32>;
@group(0) @binding(7) var<storage, read_write> st: array<f32>;

var<workgroup> q_s: array<f32, BQ * DKC>;   // [BQ][DKC]
var<workgroup> k_s: array<f32, DKC * BK>;   // [DKC][BK], transposed
var<workgroup> w_tile: array<f32, BQ * BK>;  // logits, then weights exp(s - m)
var<workgroup> row_m: array<f32, BQ>;
var<workgroup> row_l: array<f32, BQ>;
var<workgroup> row_alpha: array<f32, BQ>;

fn wg_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + nwg.x * (wg.y + nwg.y * wg.z);
}

// Keys j in [lo, hi) that query i sees: all, j <= i when causal, and only its own block of w.
fn key_range(i: u32) -> vec2<u32> {
    if (i >= p.q0 + p.nq) {
        return vec2<u32>(0u, 0u);
    }
    var lo = 0u;
    var hi = p.len;
    if ((p.flags & 1u) != 0u) {
        hi = i + 1u;
    }
    if (p.block > 0u) {
        lo = i / p.block * p.block;
        hi = min(hi, lo + p.block);
    }
    if (p.window > 0u) {
        hi = min(hi, i + 1u);
        lo = max(lo, select(0u, i + 1u - p.window, i + 1u > p.window));
    }
    return vec2<u32>(lo, hi);
}

var<private> head: u32;

// Column of q or k that holds element e of the interleaved pair order (ReRoPE loads pairs adjacent).
fn pair_col(e: u32) -> u32 {
    if ((p.pflags & 6u) != 6u) {
        return e;
    }
    return select(e / 2u + p.dk / 2u, e / 2u, e % 2u == 0u);
}

// The logit of query i against key j (positions inside the row) from their dot product q_i.k_j.
// Every per-(i, j) term of the logit (biases, length scalings) goes here.
fn logit(dot: f32, i: u32, j: u32) -> f32 {
    var s = dot * p.scale;
    if (p.logn_inv > 0.0) {
        let kr = key_range(i);
        s *= max(1.0, log(f32(kr.y - kr.x)) * p.logn_inv);
    }
    if ((p.pflags & 1u) != 0u) {
        s -= slopes[head] * f32(max(i, j) - min(i, j));
    }
    return s;
}

@compute @workgroup_size(WG)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return;
    }
    let tpq = WG / BQ;
    let cb = wid % p.n_cb;
    let qt = p.qt0 + (wid / p.n_cb) % p.n_qt;
    let r = wid / (p.n_cb * p.n_qt);
    head = (p.r0 + r) % p.heads;
    let rerope = (p.pflags & 2u) != 0u;
    let i0 = p.q0 + qt * BQ;
    let i_last = min(i0 + BQ, p.q0 + p.nq) - 1u;
    let qb = p.q_off + r * p.nq * p.dk;
    let kb = p.k_off + r * p.len * p.dk;
    let vb = p.v_off + r * p.len * p.dv;
    let ob = p.o_off + r * p.nq * p.dv;
    let sb = r * p.nq;   // this row's first query in st
    // Keys any query of the tile sees (the ranges are monotone in i), cut to this segment.
    let j_lo = key_range(i0).x;
    let j_hi = key_range(i_last).y;
    let seg_lo = max(j_lo, p.klo);
    let seg_hi = min(j_hi, p.khi);
    if (seg_lo >= seg_hi) {
        return;   // uniform over the workgroup: no barrier is skipped by part of it
    }
    let first = j_lo >= p.klo;
    let last = j_hi <= p.khi;

    let tq = lid / tpq;       // this invocation's query in the tile
    let tc = lid % tpq;       // its first column; it owns columns d0 + tc + a * tpq
    let iq = i0 + tq;
    let own = key_range(iq);
    let d0 = cb * tpq * NA;
    let live = iq < p.q0 + p.nq;
    var acc: array<f32, NA>;
    for (var a = 0u; a < NA; a++) {
        let d = d0 + tc + a * tpq;
        var x = 0.0;
        if (!first && live && d < p.dv) {
            x = st[(sb + iq - p.q0) * p.dv + d];
        }
        acc[a] = x;
    }
    if (lid < BQ) {
        var m = p.neg_inf;
        var l = 0.0;
        if (!first && i0 + lid < p.q0 + p.nq) {
            let e = p.ml_off + (sb + i0 + lid - p.q0) * 2u;
            m = st[e];
            l = st[e + 1u];
        }
        row_m[lid] = m;
        row_l[lid] = l;
    }

    for (var j0 = seg_lo; j0 < seg_hi; j0 += BK) {
        let j_end = min(j0 + BK, seg_hi);
        var dot: array<f32, SPT>;
        for (var c = 0u; c < SPT; c++) {
            dot[c] = 0.0;
        }
        for (var a0 = 0u; a0 < p.dk; a0 += DKC) {
            let na = min(DKC, p.dk - a0);
            workgroupBarrier();
            for (var e = lid; e < BQ * DKC; e += WG) {
                let i = i0 + e / DKC;
                let a = e % DKC;
                var x = 0.0;
                if (i < p.q0 + p.nq && a < na) {
                    x = ld_q(qb + (i - p.q0) * p.dk + pair_col(a0 + a));
                }
                q_s[e] = x;
            }
            for (var e = lid; e < BK * DKC; e += WG) {
                let j = j0 + e / DKC;
                let a = e % DKC;
                var x = 0.0;
                if (j < j_end && a < na) {
                    x = ld_k(kb + (j - p.klo) * p.dk + pair_col(a0 + a));
                }
                k_s[a * BK + e / DKC] = x;
            }
            workgroupBarrier();
            if (rerope) {
                let w = i32(p.rw);
                let half = p.dk / 2u;
                for (var a = 0u; a + 1u < na; a += 2u) {
                    let qa = q_s[tq * DKC + a];
                    let qb = q_s[tq * DKC + a + 1u];
                    let pair = (a0 + a) / 2u;
                    for (var c = 0u; c < SPT; c++) {
                        let kl = tc + c * tpq;
                        let ka = k_s[a * BK + kl];
                        let kb = k_s[(a + 1u) * BK + kl];
                        let delta = clamp(i32(iq) - i32(j0 + kl), -w, w);
                        let t = (u32(delta + w) * half + pair) * 2u;
                        dot[c] += (qa * ka + qb * kb) * rot[t] - (qb * ka - qa * kb) * rot[t + 1u];
                    }
                }
            } else {
                for (var a = 0u; a < na; a++) {
                    let qa = q_s[tq * DKC + a];
                    for (var c = 0u; c < SPT; c++) {
                        dot[c] += qa * k_s[a * BK + tc + c * tpq];
                    }
                }
            }
        }
        for (var c = 0u; c < SPT; c++) {
            let jl = tc + c * tpq;
            let j = j0 + jl;
            var s = 0.0;
            if (j >= own.x && j < own.y && j < j_end) {
                s = logit(dot[c], iq, j);
            }
            w_tile[tq * BK + jl] = s;
        }
        workgroupBarrier();
        if (lid < BQ) {
            let kr = key_range(i0 + lid);
            let a = max(kr.x, j0);
            let b = min(kr.y, j_end);
            let m_old = row_m[lid];
            var m = m_old;
            var alpha = 1.0;
            var sum = 0.0;
            if (WMODE == 0u) {
                for (var j = a; j < b; j++) {
                    m = max(m, w_tile[lid * BK + j - j0]);
                }
                // m_old = -inf (nothing seen yet) gives 0; equal maxima (both -inf too) give 1.
                alpha = select(exp(m_old - m), 1.0, m == m_old);
            }
            for (var j = a; j < b; j++) {
                let s = w_tile[lid * BK + j - j0];
                // exp(s - m) <= 1; a -inf logit weighs exactly 0 even when m = -inf; NaN stays NaN
                // (select keeps it for relu).
                var w = select(s, 0.0, s < 0.0);
                if (WMODE == 0u) {
                    w = select(exp(s - m), 0.0, s == p.neg_inf);
                }
                w_tile[lid * BK + j - j0] = w;
                sum += w;
            }
            row_m[lid] = m;
            row_l[lid] = row_l[lid] * alpha + sum;
            row_alpha[lid] = alpha;
        }
        workgroupBarrier();
        // Only keys the query sees: a masked key's v may be NaN, and 0 * NaN is NaN.
        let a = max(own.x, j0);
        let b = min(own.y, j_end);
        let alpha = row_alpha[tq];
        for (var c = 0u; c < NA; c++) {
            let d = d0 + tc + c * tpq;
            if (d < p.dv) {
                var x = acc[c] * alpha;
                for (var j = a; j < b; j++) {
                    x += w_tile[tq * BK + j - j0] * ld_v(vb + (j - p.klo) * p.dv + d);
                }
                acc[c] = x;
            }
        }
    }
    workgroupBarrier();
    if (!live) {
        return;
    }
    if (!last) {
        for (var c = 0u; c < NA; c++) {
            let d = d0 + tc + c * tpq;
            if (d < p.dv) {
                st[(sb + iq - p.q0) * p.dv + d] = acc[c];
            }
        }
        if (tc == 0u) {
            let e = p.ml_off + (sb + iq - p.q0) * 2u;
            st[e] = row_m[tq];
            st[e + 1u] = row_l[tq];
        }
        return;
    }
    for (var c = 0u; c < NA; c++) {
        let d = d0 + tc + c * tpq;
        if (d < p.dv) {
            var x = acc[c];
            if (WMODE == 0u) {
                x = x / row_l[tq];
            }
            st_o(ob + (iq - p.q0) * p.dv + d, x);
        }
    }
}

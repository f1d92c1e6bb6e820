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
    group: u32,      // query heads per key/value head (GQA; 1 = plain multi-head)
    q_bs: u32,       // element strides of q: batch, head, token (layout bhld or blhd)
    q_hs: u32,
    q_ts: u32,
    k_bs: u32,       // of k (over the Hkv = heads / group key/value heads)
    k_hs: u32,
    k_ts: u32,
    v_bs: u32,
    v_hs: u32,
    v_ts: u32,
    o_bs: u32,
    o_hs: u32,
    o_ts: u32,
    seqs: u32,       // 1: packed sequences, token i sees only keys of bounds[2i]..bounds[2i + 1]
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<OT>;
@group(0) @binding(5) var<storage, read> slopes: array<f32>;
@group(0) @binding(6) var<storage, read> rot: array<f32>;
@group(0) @binding(7) var<storage, read_write> st: array<f32>;
@group(0) @binding(8) var<storage, read> bounds: array<u32>;   // [Lq][2] sequence of each token
// attend_reg with VEC_V: v again, read a vec4 at a time (the host checked v's rows are 4-aligned).
@group(0) @binding(9) var<storage, read> v4: array<ST4>;
override VEC_V: bool = false;

// Row r of the pass is (batch b, query head h) = divmod(r0 + r, heads); the element offsets below
// are relative to row 0 of the pass (u32 arithmetic wraps, so the difference is exact).
fn q_row(r: u32, bs: u32, hs: u32) -> u32 {
    let rr = p.r0 + r;
    return (rr / p.heads - p.r0 / p.heads) * bs + (rr % p.heads) * hs - (p.r0 % p.heads) * hs;
}

// The same for the key/value head h / group of row r.
fn kv_row(r: u32, bs: u32, hs: u32) -> u32 {
    let rr = p.r0 + r;
    let h = (rr % p.heads) / p.group;
    let h0 = (p.r0 % p.heads) / p.group;
    return (rr / p.heads - p.r0 / p.heads) * bs + h * hs - h0 * hs;
}

var<workgroup> q_s: array<f32, BQ * DKC>;   // [BQ][DKC]
var<workgroup> k_s: array<f32, DKC * BK>;   // [DKC][BK], transposed
var<workgroup> w_tile: array<f32, BQ * BK>;  // logits, then weights exp(s - m)
var<workgroup> row_m: array<f32, BQ>;
var<workgroup> row_l: array<f32, BQ>;
var<workgroup> row_alpha: array<f32, BQ>;

// Keys j in [lo, hi) that query i sees: all, j <= i when causal, and only its own block of w.
fn key_range(i: u32) -> vec2<u32> {
    if (i >= p.q0 + p.nq) {
        return vec2<u32>(0u, 0u);
    }
    var s0 = 0u;   // the query's sequence [s0, s1)
    var s1 = p.len;
    if (p.seqs != 0u) {
        s0 = bounds[2u * i];
        s1 = bounds[2u * i + 1u];
    }
    var lo = s0;
    var hi = s1;
    if ((p.flags & 1u) != 0u) {
        hi = min(hi, i + 1u);
    }
    if (p.block > 0u) {
        lo = s0 + (i - min(i, s0)) / p.block * p.block;
        hi = min(hi, lo + p.block);
    }
    if (p.window > 0u) {
        hi = min(hi, i + 1u);
        lo = max(lo, select(0u, i + 1u - p.window, i + 1u > p.window));
    }
    // Past the last offset: an empty range at the end (ranges stay monotone in i).
    return vec2<u32>(min(lo, hi), hi);
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
    let qb = p.q_off + q_row(r, p.q_bs, p.q_hs);
    let kb = p.k_off + kv_row(r, p.k_bs, p.k_hs);
    let vb = p.v_off + kv_row(r, p.v_bs, p.v_hs);
    let ob = p.o_off + q_row(r, p.o_bs, p.o_hs);
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
                    x = ld_q(qb + (i - p.q0) * p.q_ts + pair_col(a0 + a));
                }
                q_s[e] = x;
            }
            for (var e = lid; e < BK * DKC; e += WG) {
                let j = j0 + e / DKC;
                let a = e % DKC;
                var x = 0.0;
                if (j < j_end && a < na) {
                    x = ld_k(kb + (j - p.klo) * p.k_ts + pair_col(a0 + a));
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
                    x += w_tile[tq * BK + j - j0] * ld_v(vb + (j - p.klo) * p.v_ts + d);
                }
                acc[c] = x;
            }
        }
    }
    workgroupBarrier();
    // A query past the last packed offset sees no key and keeps its output.
    if (!live || own.x >= own.y) {
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
            st_o(ob + (iq - p.q0) * p.o_ts + d, x);
        }
    }
}

// ---- Register-tiled family (CPU adapters): FlashAttention-2 order with RT x 8 logit tiles and
// RT x 16 output tiles held in registers per invocation, vec4 loads from workgroup memory. On
// llvmpipe every per-lane load is a scalar loop while arithmetic is 8 wide, so each invocation does
// many FMAs per load. A workgroup holds RQ queries (two row groups of RT); invocation t < 8 owns
// logit tile (t / 4, t % 4) of the RQ x RK block; invocation t < 2 * ncb owns output tile
// (t / ncb, t % ncb) of the RQ x Dv block (ncb = ceil(Dv / 16)); WG = max(8, 2 * ncb).
// Same Params, state buffer and key segments as `attend`; ReRoPE stays on `attend`.
const RT: u32 = 16u;        // queries per register tile
const RQ: u32 = 32u;        // queries per workgroup
const RK: u32 = 32u;        // keys per tile
override RDKC: u32 = 64u;   // columns of Dk per chunk (multiple of 4)

var<workgroup> rq_s: array<vec4<f32>, RDKC * 8u>;   // Q chunk transposed: [RDKC][RQ / 4]
var<workgroup> rk_s: array<vec4<f32>, RDKC * 8u>;   // K chunk transposed: [RDKC][RK / 4]
var<workgroup> rs_s: array<vec4<f32>, 256u>;        // logits [RQ][RK / 4]
var<workgroup> rp_s: array<vec4<f32>, 256u>;        // weights transposed [RK][RQ / 4]; -1 = masked
var<workgroup> rrow_m: array<f32, RQ>;
var<workgroup> rrow_l: array<f32, RQ>;
var<workgroup> rrow_alpha: array<f32, RQ>;

// Q columns [a0, a0 + na) of the workgroup's queries into rq_s (zeros past the pass or na).
fn load_q_chunk(lid: u32, qb: u32, i0: u32, a0: u32, na: u32) {
    for (var e = lid; e < RQ * RDKC; e += WG) {
        let il = e / RDKC;
        let a = e % RDKC;
        let i = i0 + il;
        var x = 0.0;
        if (i < p.q0 + p.nq && a < na) {
            x = ld_q(qb + (i - p.q0) * p.q_ts + a0 + a);
        }
        rq_s[a * 8u + il / 4u][il % 4u] = x;
    }
}

// The online-softmax update of one query row over the weights of key tile [j0, j_end).
fn row_update(rr: u32, i: u32, j0: u32, j_end: u32) {
    let kr = key_range(i);
    let a = max(kr.x, j0);
    let b = min(kr.y, j_end);
    let m_old = rrow_m[rr];
    var m = m_old;
    var alpha = 1.0;
    if (WMODE == 0u) {
        for (var jl = 0u; jl < RK; jl++) {
            let j = j0 + jl;
            if (j >= a && j < b) {
                m = max(m, rs_s[rr * 8u + jl / 4u][jl % 4u]);
            }
        }
        // m_old = -inf (nothing seen yet) gives 0; equal maxima (both -inf too) give 1.
        alpha = select(exp(m_old - m), 1.0, m == m_old);
    }
    var sum = 0.0;
    for (var jl = 0u; jl < RK; jl++) {
        let j = j0 + jl;
        var w = -1.0;
        if (j >= a && j < b) {
            let s = rs_s[rr * 8u + jl / 4u][jl % 4u];
            // relu keeps NaN (select); exp(s - m) <= 1 and a -inf logit weighs exactly 0.
            w = select(s, 0.0, s < 0.0);
            if (WMODE == 0u) {
                w = select(exp(s - m), 0.0, s == p.neg_inf);
            }
            sum += w;
        }
        rp_s[jl * 8u + rr / 4u][rr % 4u] = w;
    }
    rrow_m[rr] = m;
    rrow_l[rr] = rrow_l[rr] * alpha + sum;
    rrow_alpha[rr] = alpha;
}

// Four columns d.. of a row of st, like put_o (prelude) for o: one branch for the caller, and a
// column past m = dv − 1 − d reads, or stores again, column m's value.
fn st_quad(at: u32, m: u32) -> vec4<f32> {
    return vec4<f32>(st[at], st[at + min(1u, m)], st[at + min(2u, m)], st[at + min(3u, m)]);
}

fn put_st(at: u32, m: u32, y: vec4<f32>) {
    let y1 = select(y.x, y.y, m >= 1u);
    let y2 = select(y1, y.z, m >= 2u);
    st[at] = y.x;
    st[at + min(1u, m)] = y1;
    st[at + min(2u, m)] = y2;
    st[at + min(3u, m)] = select(y2, y.w, m >= 3u);
}

@compute @workgroup_size(WG)
fn attend_reg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return;
    }
    let qt = p.qt0 + wid % p.n_qt;
    let r = wid / p.n_qt;
    head = (p.r0 + r) % p.heads;
    let q_end = p.q0 + p.nq;
    let i0 = p.q0 + qt * RQ;
    let i_last = min(i0 + RQ, q_end) - 1u;
    let qb = p.q_off + q_row(r, p.q_bs, p.q_hs);
    let kb = p.k_off + kv_row(r, p.k_bs, p.k_hs);
    let vb = p.v_off + kv_row(r, p.v_bs, p.v_hs);
    let ob = p.o_off + q_row(r, p.o_bs, p.o_hs);
    let sb = r * p.nq;
    let j_lo = key_range(i0).x;
    let j_hi = key_range(i_last).y;
    let seg_lo = max(j_lo, p.klo);
    let seg_hi = min(j_hi, p.khi);
    if (seg_lo >= seg_hi) {
        return;   // uniform over the workgroup
    }
    let first = j_lo >= p.klo;
    let last = j_hi <= p.khi;

    // Logit tile of this invocation (lid < 8): rows sg * RT.., keys sk * 8..
    let s_own = lid < 8u;
    let sg = (lid / 4u) % 2u;
    let sk = lid % 4u;
    // Output tile (lid < 2 * ncb): rows og * RT.., columns d0..d0 + 16.
    let ncb = (p.dv + 15u) / 16u;
    let o_own = lid < 2u * ncb;
    let og = select(0u, lid / ncb, o_own);
    let d0 = (lid % ncb) * 16u;
    let oi0 = i0 + og * RT;

    // Every loop that indexes acc is unrolled (// #unroll): one runtime index would move the
    // whole tile from registers to memory. Quads load and store through st_quad / put_*.
    var acc: array<vec4<f32>, 64>;   // [RT rows][4 vec4 of columns]
    // #unroll e 64
    {
        acc[e] = vec4<f32>(0.0);
    }
    if (!first && o_own) {
        // #unroll t 64
        {
            let i = oi0 + t / 4u;
            let d = d0 + (t % 4u) * 4u;
            if (i < q_end && d < p.dv) {
                acc[t] = st_quad((sb + i - p.q0) * p.dv + d, p.dv - 1u - d);
            }
        }
    }
    for (var rr = lid; rr < RQ; rr += WG) {
        var m = p.neg_inf;
        var l = 0.0;
        if (!first && i0 + rr < q_end) {
            let e = p.ml_off + (sb + i0 + rr - p.q0) * 2u;
            m = st[e];
            l = st[e + 1u];
        }
        rrow_m[rr] = m;
        rrow_l[rr] = l;
    }
    let resident = p.dk <= RDKC;
    if (resident) {
        load_q_chunk(lid, qb, i0, 0u, p.dk);
    }

    for (var j0 = seg_lo; j0 < seg_hi; j0 += RK) {
        let j_end = min(j0 + RK, seg_hi);
        var s: array<vec4<f32>, 32>;   // [RT rows][2 vec4 of keys]
        // #unroll e 32
        {
            s[e] = vec4<f32>(0.0);
        }
        for (var a0 = 0u; a0 < p.dk; a0 += RDKC) {
            let na = min(RDKC, p.dk - a0);
            workgroupBarrier();
            if (!resident) {
                load_q_chunk(lid, qb, i0, a0, na);
            }
            for (var e = lid; e < RK * RDKC; e += WG) {
                let jl = e / RDKC;
                let a = e % RDKC;
                let j = j0 + jl;
                var x = 0.0;
                if (j < j_end && a < na) {
                    x = ld_k(kb + (j - p.klo) * p.k_ts + a0 + a);
                }
                rk_s[a * 8u + jl / 4u][jl % 4u] = x;
            }
            workgroupBarrier();
            if (s_own) {
                for (var a = 0u; a < na; a++) {
                    let q0 = rq_s[a * 8u + sg * 4u];
                    let q1 = rq_s[a * 8u + sg * 4u + 1u];
                    let q2 = rq_s[a * 8u + sg * 4u + 2u];
                    let q3 = rq_s[a * 8u + sg * 4u + 3u];
                    let k0 = rk_s[a * 8u + sk * 2u];
                    let k1 = rk_s[a * 8u + sk * 2u + 1u];
                    // #unroll c 4
                    {
                        let x0 = vec4<f32>(q0[c]);
                        let x1 = vec4<f32>(q1[c]);
                        let x2 = vec4<f32>(q2[c]);
                        let x3 = vec4<f32>(q3[c]);
                        s[c * 2u] = fma(x0, k0, s[c * 2u]);
                        s[c * 2u + 1u] = fma(x0, k1, s[c * 2u + 1u]);
                        s[8u + c * 2u] = fma(x1, k0, s[8u + c * 2u]);
                        s[8u + c * 2u + 1u] = fma(x1, k1, s[8u + c * 2u + 1u]);
                        s[16u + c * 2u] = fma(x2, k0, s[16u + c * 2u]);
                        s[16u + c * 2u + 1u] = fma(x2, k1, s[16u + c * 2u + 1u]);
                        s[24u + c * 2u] = fma(x3, k0, s[24u + c * 2u]);
                        s[24u + c * 2u + 1u] = fma(x3, k1, s[24u + c * 2u + 1u]);
                    }
                }
            }
        }
        if (s_own) {
            // The dots out first (unrolled, s stays in registers), then the logits in a loop:
            // logit() inlined once, not once per element of the tile.
            // #unroll t 32
            {
                rs_s[(sg * RT + t / 2u) * 8u + sk * 2u + t % 2u] = s[t];
            }
            for (var t = 0u; t < 32u; t++) {
                let il = sg * RT + t / 2u;
                let c = t % 2u;
                let at = il * 8u + sk * 2u + c;
                var x = rs_s[at];
                for (var e = 0u; e < 4u; e++) {
                    x[e] = logit(x[e], i0 + il, j0 + sk * 8u + c * 4u + e);
                }
                rs_s[at] = x;
            }
        }
        workgroupBarrier();
        for (var rr = lid; rr < RQ; rr += WG) {
            row_update(rr, i0 + rr, j0, j_end);
        }
        workgroupBarrier();
        if (o_own) {
            // Every row of the tile sees every key of [j0, j_end): no masked weight to skip.
            let o_last = min(oi0 + RT, q_end) - 1u;
            let full = oi0 < q_end && key_range(o_last).x <= j0 && key_range(oi0).y >= j_end;
            // #unroll rr RT
            {
                let al = vec4<f32>(rrow_alpha[og * RT + rr]);
                // #unroll c 4
                {
                    acc[rr * 4u + c] *= al;
                }
            }
            for (var j = j0; j < j_end; j++) {
                let jl = j - j0;
                var vr: array<vec4<f32>, 4>;
                // #unroll c4 4
                {
                    let d = d0 + c4 * 4u;
                    var x = vec4<f32>(0.0);
                    if (VEC_V) {
                        // VEC_V: Dv is a multiple of 4; a quad past it reads the last one.
                        let y = ld4_v4((vb + (j - p.klo) * p.v_ts + min(d, p.dv - 4u)) / 4u);
                        x = select(x, y, d < p.dv);
                    } else {
                        for (var f = 0u; f < 4u; f++) {
                            if (d + f < p.dv) {
                                x[f] = ld_v(vb + (j - p.klo) * p.v_ts + d + f);
                            }
                        }
                    }
                    vr[c4] = x;
                }
                // #unroll g 4
                {
                    let w4 = rp_s[jl * 8u + og * 4u + g];
                    // #unroll e 4
                    {
                        let w = vec4<f32>(w4[e]);
                        let rr = g * 4u + e;
                        // A masked key's v may be NaN, and 0 * NaN is NaN: skip, never weigh by 0.
                        let keep = full || !(w4[e] < 0.0);
                        // #unroll c 4
                        {
                            let y = fma(w, vr[c], acc[rr * 4u + c]);
                            acc[rr * 4u + c] = select(acc[rr * 4u + c], y, keep);
                        }
                    }
                }
            }
        }
    }
    workgroupBarrier();
    if (!last) {
        if (o_own) {
            // #unroll t 64
            {
                let i = oi0 + t / 4u;
                let d = d0 + (t % 4u) * 4u;
                if (i < q_end && d < p.dv) {
                    put_st((sb + i - p.q0) * p.dv + d, p.dv - 1u - d, acc[t]);
                }
            }
        }
        for (var rr = lid; rr < RQ; rr += WG) {
            if (i0 + rr < q_end) {
                let e = p.ml_off + (sb + i0 + rr - p.q0) * 2u;
                st[e] = rrow_m[rr];
                st[e + 1u] = rrow_l[rr];
            }
        }
        return;
    }
    if (o_own) {
        // Rows past the last packed offset (or the pass) keep their output.
        var live = 0u;
        for (var rr = 0u; rr < RT; rr++) {
            let kr = key_range(oi0 + rr);
            live |= select(0u, 1u << rr, kr.x < kr.y && oi0 + rr < q_end);
        }
        // #unroll t 64
        {
            let rr = t / 4u;
            let i = oi0 + rr;
            let d = d0 + (t % 4u) * 4u;
            if ((live & (1u << rr)) != 0u && d < p.dv) {
                let l = select(1.0, rrow_l[og * RT + rr], WMODE == 0u);
                put_o(ob + (i - p.q0) * p.o_ts + d, p.dv - 1u - d, acc[t] / l);
            }
        }
    }
}

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

override WG: u32 = 256u;   // invocations per workgroup = BQ * TPQ
override BQ: u32 = 32u;    // queries per tile
override BK: u32 = 32u;    // keys per tile = TPQ * SPT
override DKC: u32 = 32u;   // columns of Dk per chunk of the Q and K tiles
override WMODE: u32 = 0u;  // 0 softmax, 1 relu weights without normalisation
const NA: u32 = 8u;        // output columns accumulated per invocation
const SPT: u32 = 8u;       // logits per invocation
const NEG: f32 = -1e30;    // "no key seen yet": below any finite logit we meet, yet exp(NEG - x) = 0

struct Params {
    rows: u32,
    len: u32,
    dk: u32,
    dv: u32,
    n_qt: u32,    // query tiles per row
    n_cb: u32,    // column blocks of Dv
    flags: u32,   // bit 0 causal
    block: u32,   // DiagAttention block w; 0 = one block spanning L
    scale: f32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
    heads: u32,      // H: row r of the pass is head (r0 + r) % H
    r0: u32,
    window: u32,     // sliding window w; 0 = none
    pflags: u32,     // bit 0 ALiBi, bit 1 ReRoPE, bit 2 ReRoPE half-split layout
    logn_inv: f32,   // 1 / ln L_train; 0 = no log-n scale
    rw: u32,         // ReRoPE window
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<OT>;
@group(0) @binding(5) var<storage, read> slopes: array<f32>;
@group(0) @binding(6) var<storage, read> rot: array<f32>;

var<workgroup> q_s: array<f32, BQ * DKC>;   // [BQ][DKC]
var<workgroup> k_s: array<f32, DKC * BK>;   // [DKC][BK], transposed
var<workgroup> w_tile: array<f32, BQ * BK>;  // logits, then weights exp(s - m)
var<workgroup> row_m: array<f32, BQ>;
var<workgroup> row_l: array<f32, BQ>;
var<workgroup> row_alpha: array<f32, BQ>;

// Keys j in [lo, hi) that query i sees: all, j <= i when causal, and only its own block of w.
fn key_range(i: u32) -> vec2<u32> {
    if (i >= p.len) {
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
    let qt = (wid / p.n_cb) % p.n_qt;
    let r = wid / (p.n_cb * p.n_qt);
    head = (p.r0 + r) % p.heads;
    let rerope = (p.pflags & 2u) != 0u;
    let i0 = qt * BQ;
    let i_last = min(i0 + BQ, p.len) - 1u;
    let qb = p.q_off + r * p.len * p.dk;
    let kb = p.k_off + r * p.len * p.dk;
    let vb = p.v_off + r * p.len * p.dv;
    let ob = p.o_off + r * p.len * p.dv;
    // Keys any query of the tile sees (the ranges are monotone in i).
    let j_lo = key_range(i0).x;
    let j_hi = key_range(i_last).y;

    let tq = lid / tpq;       // this invocation's query in the tile
    let tc = lid % tpq;       // its first column; it owns columns d0 + tc + a * tpq
    let iq = i0 + tq;
    let own = key_range(iq);
    let d0 = cb * tpq * NA;
    var acc: array<f32, NA>;
    for (var a = 0u; a < NA; a++) {
        acc[a] = 0.0;
    }
    if (lid < BQ) {
        row_m[lid] = NEG;
        row_l[lid] = 0.0;
    }

    for (var j0 = j_lo; j0 < j_hi; j0 += BK) {
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
                if (i < p.len && a < na) {
                    x = ld_q(qb + i * p.dk + pair_col(a0 + a));
                }
                q_s[e] = x;
            }
            for (var e = lid; e < BK * DKC; e += WG) {
                let j = j0 + e / DKC;
                let a = e % DKC;
                var x = 0.0;
                if (j < p.len && a < na) {
                    x = ld_k(kb + j * p.dk + pair_col(a0 + a));
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
            var s = NEG;
            if (j >= own.x && j < own.y) {
                s = logit(dot[c], iq, j);
            }
            w_tile[tq * BK + jl] = s;
        }
        workgroupBarrier();
        if (lid < BQ) {
            let kr = key_range(i0 + lid);
            let a = max(kr.x, j0);
            let b = min(kr.y, j0 + BK);
            let m_old = row_m[lid];
            var m = m_old;
            var alpha = 1.0;
            var sum = 0.0;
            if (WMODE == 0u) {
                for (var j = a; j < b; j++) {
                    m = max(m, w_tile[lid * BK + j - j0]);
                }
                alpha = exp(m_old - m);
            }
            for (var j = a; j < b; j++) {
                let s = w_tile[lid * BK + j - j0];
                // exp(s - m) <= 1; NaN in s stays NaN (select keeps it for relu).
                var w = select(s, 0.0, s < 0.0);
                if (WMODE == 0u) {
                    w = exp(s - m);
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
        let b = min(own.y, j0 + BK);
        let alpha = row_alpha[tq];
        for (var c = 0u; c < NA; c++) {
            let d = d0 + tc + c * tpq;
            if (d < p.dv) {
                var x = acc[c] * alpha;
                for (var j = a; j < b; j++) {
                    x += w_tile[tq * BK + j - j0] * ld_v(vb + j * p.dv + d);
                }
                acc[c] = x;
            }
        }
    }
    workgroupBarrier();
    if (iq < p.len) {
        for (var c = 0u; c < NA; c++) {
            let d = d0 + tc + c * tpq;
            if (d < p.dv) {
                var x = acc[c];
                if (WMODE == 0u) {
                    x = x / row_l[tq];
                }
                st_o(ob + iq * p.dv + d, x);
            }
        }
    }
}

// Exact softmax attention, tiled with the online softmax (Milakov & Gimelshein 2018; Dao et al. 2022):
// a running max m and sum l per query row, so no L x L buffer exists; memory is O(BQ * BK) per workgroup.
// q, k: [R, L, Dk]; v: [R, L, Dv]; o: [R, L, Dv], row-major, R = rows (batch x heads) in this pass.
// One workgroup per (row, query tile of BQ rows, column block of DVB = TPQ * NA columns of Dv).
// Per key tile: Q and K in chunks of DKC columns through workgroup memory (K transposed), each
// invocation holding SPT logits of its query in registers; then the online-softmax update.
// WMODE 1 (DiagAttention's relu variant) weighs keys by relu(logit) and writes the unnormalised sum.

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<OT>;

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
    return vec2<u32>(lo, hi);
}

// The logit of query i against key j (positions inside the row) from their dot product q_i.k_j.
// Every per-(i, j) term of the logit (biases, length scalings) goes here.
fn logit(dot: f32, i: u32, j: u32) -> f32 {
    return dot * p.scale;
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
                    x = ld_q(qb + i * p.dk + a0 + a);
                }
                q_s[e] = x;
            }
            for (var e = lid; e < BK * DKC; e += WG) {
                let j = j0 + e / DKC;
                let a = e % DKC;
                var x = 0.0;
                if (j < p.len && a < na) {
                    x = ld_k(kb + j * p.dk + a0 + a);
                }
                k_s[a * BK + e / DKC] = x;
            }
            workgroupBarrier();
            for (var a = 0u; a < na; a++) {
                let qa = q_s[tq * DKC + a];
                for (var c = 0u; c < SPT; c++) {
                    dot[c] += qa * k_s[a * BK + tc + c * tpq];
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

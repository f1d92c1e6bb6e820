// Lightning attention's definition-order pass for NaN/±Inf inputs (issue 11). The chunk engine
// carries earlier chunks as the state S = Σ_j λ^(C−1−j) φ(k_j)ᵀ v_j and forms φ(q_t)·S: with a
// non-finite input that state form gives another NaN/±Inf pattern than the definition
//
//   o_t[e] = Σ_{s0 ≤ j ≤ t} λ^(t−j) (φ(q_t)·φ(k_j)) v_j[e]      (s0: the start of t's sequence).
//
// Where the definition is not finite (q_t holds a NaN/±Inf, or the engine's o_t[e] is not finite)
// it equals the sum of its non-finite terms: λ^(t−j) > 0 keeps each term's sign, and a finite term
// changes no ±Inf or NaN. This pass recomputes exactly those entries as that sum and leaves every
// other output as the engine wrote it.
//   detect: one invocation per (row, token); when an entry needs the sum it stores the grid of terms
//           and write_back into `args` (their indirect dispatch: none when all is finite).
//   terms:  one invocation per (row, token, value dim) and the keys [j0, j1) of this dispatch,
//           adding the non-finite terms to acc (the host keeps j1 − j0 small: bounded loops).
//   write_back: o = acc where acc is not finite.
// With an initial state S_0 (stateful calls), its term λ^(t+1) φ(q_t)·S_0[.., e] is a sum over
// features in the definition as well: the first terms dispatch adds it when it is not finite
// (λ^(t+1) > 0 keeps its sign, as in the reference). s0: [N, Hq, Dk, Dv] f32, N = sequences
// (packed) or batch entries.
// Layout: q, k [.., L, Dk] and v, o [.., L, Dv] through (batch, head, token) strides; rows are
// (batch, head) pairs, local row r = global row g0 + r; acc [nr, L, Dv] f32; starts: the token
// offsets of the packed sequences (n_seq + 1 of them; [0, L] without packing).

override WG: u32 = 64u;
override FMAP: u32 = 0u;

struct Params {
    total: u32,     // work items: nr·L (detect), nr·L·Dv (terms, write_back)
    len: u32,
    dk: u32,
    dv: u32,
    j0: u32,        // keys of this terms dispatch: [j0, j1)
    j1: u32,
    hq: u32,
    g0: u32,
    n_seq: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    q_bs: u32,
    q_hs: u32,
    q_ts: u32,
    k_bs: u32,
    k_hs: u32,
    k_ts: u32,
    v_bs: u32,
    v_hs: u32,
    v_ts: u32,
    o_bs: u32,
    o_hs: u32,
    o_ts: u32,
    gx: u32,        // the folded grid of terms and write_back
    gy: u32,
    gz: u32,
    s0_on: u32,     // 1: add the initial state's term (binding 8)
    packed: u32,    // 1: s0 is per packed sequence, else per batch entry
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read> starts: array<u32>;
@group(0) @binding(5) var<storage, read_write> acc: array<f32>;
@group(0) @binding(6) var<storage, read_write> args: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read_write> o: array<OT>;
@group(0) @binding(8) var<storage, read> s0: array<f32>;

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Offset of local row r's token 0 from local row 0's (wrapping u32; the true value is >= 0).
fn row_base(r: u32, bs: u32, hs: u32) -> u32 {
    let g = p.g0 + r;
    return (g / p.hq - p.g0 / p.hq) * bs + (g % p.hq) * hs - (p.g0 % p.hq) * hs;
}

// The first token of t's sequence, or p.len when t lies past the last offset.
fn seq_start(t: u32) -> u32 {
    if (t < starts[0] || t >= starts[p.n_seq]) {
        return p.len;
    }
    var lo = 0u;
    var hi = p.n_seq;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (starts[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return starts[lo];
}

// The index of t's packed sequence (t inside one).
fn seq_index(t: u32) -> u32 {
    var lo = 0u;
    var hi = p.n_seq;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (starts[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// The initial state's term φ(q_t)·S_0[.., e] of local row r (its sign; λ^(t+1) > 0 left out).
fn initial_term(r: u32, t: u32, e: u32) -> f32 {
    let g = p.g0 + r;
    let n = select(g / p.hq, seq_index(t), p.packed == 1u);
    let sb = (n * p.hq + g % p.hq) * p.dk * p.dv + e;
    let qb = p.q_off + row_base(r, p.q_bs, p.q_hs) + t * p.q_ts;
    var y = 0.0;
    for (var a = 0u; a < p.dk; a++) {
        y += phi(ld_q(qb + a)) * s0[sb + a * p.dv];
    }
    return y;
}

fn q_finite(r: u32, t: u32) -> bool {
    let b = p.q_off + row_base(r, p.q_bs, p.q_hs) + t * p.q_ts;
    var ok = true;
    for (var a = 0u; a < p.dk; a++) {
        ok = ok && finite(phi(ld_q(b + a)));
    }
    return ok;
}

fn o_at(r: u32, t: u32, e: u32) -> u32 {
    return p.o_off + row_base(r, p.o_bs, p.o_hs) + t * p.o_ts + e;
}

@compute @workgroup_size(WG)
fn detect(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let r = gid / p.len;
    let t = gid % p.len;
    if (seq_start(t) == p.len) {
        return;
    }
    var ok = q_finite(r, t);
    for (var e = 0u; e < p.dv; e++) {
        ok = ok && finite(f32(o[o_at(r, t, e)]));
    }
    if (!ok) {
        atomicStore(&args[0], p.gx);
        atomicStore(&args[1], p.gy);
        atomicStore(&args[2], p.gz);
    }
}

// Whether entry (r, t, e) takes the definition's non-finite sum; s0 its sequence's start.
fn redo(r: u32, t: u32, e: u32) -> bool {
    return !q_finite(r, t) || !finite(f32(o[o_at(r, t, e)]));
}

@compute @workgroup_size(WG)
fn terms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let r = gid / (p.len * p.dv);
    let t = (gid / p.dv) % p.len;
    let e = gid % p.dv;
    let s0 = seq_start(t);
    if (s0 == p.len || !redo(r, t, e)) {
        return;
    }
    var sum = 0.0;
    if (p.j0 > 0u) {
        sum = acc[gid];
    } else if (p.s0_on == 1u) {
        let y = initial_term(r, t, e);
        if (!finite(y)) {
            sum = y;
        }
    }
    let qb = p.q_off + row_base(r, p.q_bs, p.q_hs) + t * p.q_ts;
    let kb = p.k_off + row_base(r, p.k_bs, p.k_hs);
    let vb = p.v_off + row_base(r, p.v_bs, p.v_hs) + e;
    let hi = min(p.j1, t + 1u);
    for (var j = max(p.j0, s0); j < hi; j++) {
        var w = 0.0;
        for (var a = 0u; a < p.dk; a++) {
            w += phi(ld_q(qb + a)) * phi(ld_k(kb + j * p.k_ts + a));
        }
        let y = w * ld_v(vb + j * p.v_ts);
        if (!finite(y)) {
            sum += y;
        }
    }
    acc[gid] = sum;
}

@compute @workgroup_size(WG)
fn write_back(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let r = gid / (p.len * p.dv);
    let t = (gid / p.dv) % p.len;
    let e = gid % p.dv;
    if (seq_start(t) == p.len || !redo(r, t, e)) {
        return;
    }
    let x = acc[gid];
    if (!finite(x)) {
        st_o(o_at(r, t, e), x);
    }
}

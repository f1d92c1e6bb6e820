// The chunk engine: kernelized linear attention in chunks of CHUNK rows (Katharopoulos et al. 2020,
// eqs. 4-6 and 16-20), with an optional per-head decay (Lightning Attention-2, Qin et al. 2024) and
// an optional denominator. One algorithm serves linear attention (any feature map, causal or not),
// Lightning (DECAY), NormAttention (no DEN), FAVOR+'s core (features precomputed, FMAP = identity),
// the causal prefill of recurrent decoding (totals) and DiagAttention's softmax blocks (SOFTMAX).
//
//   o_i = [λ^(i+1) φ(q_i) KV_c + Σ_{j≤i in chunk} λ^(i−j) (φ(q_i)·φ(k_j)) v_j] / den_i   (i, j local)
//   KV_{c+1} = λ^C KV_c + Σ_j λ^(C−1−j) φ(k_j) v_jᵀ;   z likewise with v_j = 1;   λ = exp(−s_h).
// Non-causal: KV = the sum over every chunk, no intra-chunk term (and λ = 1).
//
// Layout (f32 scratch of one pass; R rows = (batch, head) pairs, nc chunks of CP ≥ CHUNK slots,
// slots past CHUNK and rows past L are zero): qt, kt = φ(Q)ᵀ, φ(K)ᵀ per chunk [R, nc, Dkp, CP]
// (kt causal or SOFTMAX only);
// kw = φ(K) rows weighted by λ^(C−1−j) [R, nc, CP, Dkp]; vp = V padded [R, nc, CP, Dvp] (unused
// with V_DIRECT: V itself);
// state [R, nc, W] with W = Dkp·Dvp (KV) + Dkp (z); carry [R, W] (the state entering this segment
// of L, then the state after it). Dkp, Dvp are multiples of TR, TC; CP of TR, TC and 4.
// Pipeline: [load_state] -> prep_qk, prep_v -> chunk_state -> scan -> [totals] -> chunk_apply
// (SCAN_IN: no scan; SOFTMAX: prep_qk, prep_v -> chunk_apply).
// Contractions are register-tiled: an invocation owns a TR×TC block of its output and loads TR+TC
// values (as vec4) per TR·TC FMAs; the host picks TR, TC per adapter (large on CPU adapters).
// No invocation loops more than max(CP, Dkp, nc, GROUP·CHUNK) times; the host keeps nc ≤ 32 768
// per segment, GROUP·CHUNK ≤ 1024 and (SCAN_IN) the segment ≤ 8192 rows.

override FMAP: u32 = 0u;     // feature map (FMAP_* codes; phi from the prelude)
override WG: u32 = 64u;      // invocations per workgroup
override CHUNK: u32 = 64u;   // rows per chunk
override CP: u32 = 64u;      // slots per chunk (CHUNK rounded up to the tiles)
override CAUSAL: bool = false;
override DECAY: bool = false;
override DEN: bool = true;
// Causal FAVOR+: per-chunk, per-feature key log-scales (logs); the state entering chunk c stays at
// chunk c−1's scale and there is no intra-chunk term (FAVOR+ adds it in the log domain).
override RESCALE: bool = false;
// The host checked that q, k, v rows are 4-aligned (offsets, strides, Dk and Dv multiples of 4):
// the prep passes read them a vec4 at a time through q4, k4, v4 (the same buffers).
override VEC_IN: bool = false;
// DiagAttention with softmax weights (TransNormer, Qin et al. 2022): one chunk is one block, the
// identity map gives q, k; per chunk the scores (causal or the whole block), then per query row
// weights exp(scale·s − max) normalised by their sum; no state, no carry.
override SOFTMAX: bool = false;
// Causal chunk_apply: an invocation takes row tiles r and nrt − 1 − r (the host sets it while
// the doubled tile loop stays in the loop budget).
override PAIR: bool = false;
// VEC_IN with Dv = DVP and CP = CHUNK: the contractions read V through v4 and prep_v is skipped.
override V_DIRECT: bool = false;
// Non-causal: a chunk_state invocation sums GROUP consecutive chunks into one state, so the
// states written and scanned shrink by GROUP (the scan sees ceil(nc / GROUP) "chunks").
override GROUP: u32 = 1u;
// A chunk_state invocation runs every chunk of the segment in order and does the scan's work:
// it starts from the carry, writes the state entering each chunk (CAUSAL) and the carry after
// the segment; no scan pass runs (the host sets it where tiles × rows fill the adapter).
override SCAN_IN: bool = false;

// Padded head dims Dkp, Dvp (multiples of TR, TC): compile-time, so the contractions have constant
// trip counts and index arithmetic divides by constants. The pipeline substitutes the host's values;
// any Dk, Dv runs through the padded sizes (odd dims share the pipeline of their padding).
const DKP: u32 = 64u;
const DVP: u32 = 64u;
// Register tile: compile-time sizes (they size function-scope arrays, which overrides cannot), so
// the pipeline substitutes the host's TR, TC for these lines.
const TR: u32 = 16u;
const TC: u32 = 16u;
const TR4: u32 = TR / 4u;
const TC4: u32 = TC / 4u;
// Columns per tile of the causal score block (TC or TC / 2; substituted too).
const SC: u32 = 8u;
const SC4: u32 = SC / 4u;

struct Params {
    len: u32,       // rows of L in this segment (the longer of q's and k's)
    n_chunks: u32,  // chunks in this segment
    dk: u32,
    dv: u32,
    dkp: u32,
    dvp: u32,
    total: u32,     // work items of this dispatch
    first: u32,     // 1: this segment starts the sequence (carry starts at 0)
    eps: f32,
    heads: u32,
    row0: u32,      // head of row 0 is row0 % heads
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    s_off: u32,
    z_off: u32,
    lq: u32,        // query rows in this segment (outputs written)
    lk: u32,        // key/value rows in this segment
    hq: u32,        // query heads: row g = (batch g / hq, head g % hq)
    group: u32,     // query heads per key/value head (GQA)
    g0: u32,        // global row of local row 0
    // Element strides (batch, head, token) of q, k, v and o: any layout, no transpose.
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
    scale: f32,     // SOFTMAX: the logit scale
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read> slopes: array<f32>;
@group(0) @binding(5) var<storage, read_write> qt: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> kt: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> kw: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> vp: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> carry: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> o: array<OT>;
@group(0) @binding(12) var<storage, read_write> s_out: array<f32>;
@group(0) @binding(13) var<storage, read_write> z_out: array<f32>;
// RESCALE: logs [R, nc, Dk] f32, the log-scale of chunk c's key features (non-decreasing in c).
@group(0) @binding(14) var<storage, read> logs: array<f32>;
@group(0) @binding(15) var<storage, read> q4: array<ST4>;
@group(0) @binding(16) var<storage, read> k4: array<ST4>;
@group(0) @binding(17) var<storage, read> v4: array<ST4>;

// Masked, decayed scores, transposed: [j][i]; tiles above the diagonal are never written.
var<workgroup> at: array<vec4<f32>, CP * CP / 4u>;
// SOFTMAX: each query row's sum of weights.
var<workgroup> den: array<vec4<f32>, CP / 4u>;

fn slope(r: u32) -> f32 {
    if (!DECAY) {
        return 0.0;
    }
    return slopes[(p.row0 + r) % p.heads];
}

fn width4() -> u32 {
    return (DKP * DVP + DKP) / 4u;
}

// Offset of local row r's token 0 from local row 0's in a tensor of strides (bs, hs), whose heads
// are query heads / grp. Wrapping u32: the true value is >= 0 in both layouts.
fn row_base(r: u32, bs: u32, hs: u32, grp: u32) -> u32 {
    let g = p.g0 + r;
    let b = g / p.hq - p.g0 / p.hq;
    return b * bs + ((g % p.hq) / grp) * hs - ((p.g0 % p.hq) / grp) * hs;
}

// V of chunk rc's slot j, value dims 4n..4n+3 (0 past the segment's keys); vrow = v_row(row).
fn v_quad(rc: u32, vrow: u32, c: u32, j: u32, n: u32) -> vec4<f32> {
    if (V_DIRECT) {
        let t = c * CHUNK + j;
        // Past the keys, the load reads the last key's row (in the binding) and is discarded.
        let tl = min(t, max(p.lk, 1u) - 1u);
        return select(vec4<f32>(0.0), ld4_v4((vrow + tl * p.v_ts) / 4u + n), t < p.lk);
    }
    return vp[(rc * CP + j) * (DVP / 4u) + n];
}

fn v_row(r: u32) -> u32 {
    return p.v_off + row_base(r, p.v_bs, p.v_hs, p.group);
}

// One invocation per (row, 4 slots, 4 features): φ once per element, into qt, kt and kw.
@compute @workgroup_size(WG)
fn prep_qk(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let a4n = DKP / 4u;
    let per_row = p.n_chunks * (CP / 4u) * a4n;
    let r = gid / per_row;
    let rest = gid % per_row;
    let a4 = rest % a4n;
    let s4 = rest / a4n;           // slot quad over the whole segment
    let c = s4 / (CP / 4u);
    let sl0 = (s4 % (CP / 4u)) * 4u;
    let lam = -slope(r);
    let qb = p.q_off + row_base(r, p.q_bs, p.q_hs, 1u);
    let kb = p.k_off + row_base(r, p.k_bs, p.k_hs, p.group);
    var qm: array<vec4<f32>, 4>;   // [slot][feature]
    var km: array<vec4<f32>, 4>;
    for (var s = 0u; s < 4u; s++) {
        let sl = sl0 + s;
        let t = c * CHUNK + sl;
        var qv = vec4<f32>(0.0);
        var kv = vec4<f32>(0.0);
        if (VEC_IN) {
            let a = a4 * 4u;
            if (sl < CHUNK && a < p.dk && t < p.lq) {
                let x = ld4_q4((qb + t * p.q_ts + a) / 4u);
                qv = vec4<f32>(phi(x.x), phi(x.y), phi(x.z), phi(x.w));
            }
            if (sl < CHUNK && a < p.dk && t < p.lk) {
                let x = ld4_k4((kb + t * p.k_ts + a) / 4u);
                kv = vec4<f32>(phi(x.x), phi(x.y), phi(x.z), phi(x.w));
            }
        } else if (sl < CHUNK) {
            for (var e = 0u; e < 4u; e++) {
                let a = a4 * 4u + e;
                if (a < p.dk && t < p.lq) {
                    qv[e] = phi(ld_q(qb + t * p.q_ts + a));
                }
                if (a < p.dk && t < p.lk) {
                    kv[e] = phi(ld_k(kb + t * p.k_ts + a));
                }
            }
        }
        qm[s] = qv;
        km[s] = kv;
        var w = 1.0;
        if (DECAY) {
            // Weights to the chunk's last row: a ragged last chunk of n rows uses λ^(n−1−j), so
            // the carry after it is the state after the segment's last row.
            let n = min(CHUNK, p.len - c * CHUNK);
            w = exp(lam * f32(n - 1u - min(sl, n - 1u)));
        }
        if (!SOFTMAX) {
            kw[((r * p.n_chunks + c) * CP + sl) * a4n + a4] = kv * w;
        }
    }
    let cb = (r * p.n_chunks + c) * DKP;
    for (var e = 0u; e < 4u; e++) {
        let i = ((cb + a4 * 4u + e) * CP + sl0) / 4u;
        qt[i] = vec4<f32>(qm[0][e], qm[1][e], qm[2][e], qm[3][e]);
        // kt feeds the score blocks only.
        if (CAUSAL || SOFTMAX) {
            kt[i] = vec4<f32>(km[0][e], km[1][e], km[2][e], km[3][e]);
        }
    }
}

// One invocation per (row, slot, 4 value dims): V into vp, zero-padded.
@compute @workgroup_size(WG)
fn prep_v(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let d4n = DVP / 4u;
    let per_row = p.n_chunks * CP * d4n;
    let r = gid / per_row;
    let rest = gid % per_row;
    let d4 = rest % d4n;
    let s = rest / d4n;
    let c = s / CP;
    let sl = s % CP;
    let t = c * CHUNK + sl;
    var x = vec4<f32>(0.0);
    let vb = p.v_off + row_base(r, p.v_bs, p.v_hs, p.group);
    if (VEC_IN) {
        if (sl < CHUNK && t < p.lk && d4 * 4u < p.dv) {
            x = ld4_v4((vb + t * p.v_ts + d4 * 4u) / 4u);
        }
    } else if (sl < CHUNK && t < p.lk) {
        for (var e = 0u; e < 4u; e++) {
            let d = d4 * 4u + e;
            if (d < p.dv) {
                x[e] = ld_v(vb + t * p.v_ts + d);
            }
        }
    }
    vp[gid] = x;
}

// One invocation per (row, group of GROUP chunks, TR×TC tile of KV): KV_c = Σ_j kw_j v_jᵀ, and
// z_c = Σ_j kw_j by the first tile column. SCAN_IN: one group of every chunk, from the carry.
@compute @workgroup_size(WG)
fn chunk_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let tv = DVP / TC;
    let ntile = (DKP / TR) * tv;
    let group = select(GROUP, p.n_chunks, SCAN_IN);
    let ng = (p.n_chunks + group - 1u) / group;
    let rg = gid / ntile;
    let tile = gid % ntile;
    let a0 = (tile / tv) * TR;
    let d0 = (tile % tv) * TC;
    let a4n = DKP / 4u;
    let r = rg / ng;
    let c0 = (rg % ng) * group;
    var acc: array<vec4<f32>, TR * TC4>;
    var zacc: array<vec4<f32>, TR4>;
    let from_carry = SCAN_IN && p.first == 0u;
    let cb = r * width4();
    // #unroll e TR * TC4
    {
        acc[e] = vec4<f32>(0.0);
        if (from_carry) {
            acc[e] = carry[cb + kv_entry(a0, d0, e)];
        }
    }
    // #unroll e TR4
    {
        zacc[e] = vec4<f32>(0.0);
        if (from_carry) {
            zacc[e] = carry[cb + DKP * DVP / 4u + a0 / 4u + e];
        }
    }
    let vrow = v_row(r);
    for (var c = c0; c < min(c0 + group, p.n_chunks); c++) {
        let rc = r * p.n_chunks + c;
        if (SCAN_IN) {
            if (CAUSAL) {
                // The state entering chunk c.
                let sb = rc * width4();
                // #unroll e TR * TC4
                {
                    state[sb + kv_entry(a0, d0, e)] = kv_kept(a0, e, acc[e]);
                }
                if (d0 == 0u) {
                    // #unroll e TR4
                    {
                        state[sb + DKP * DVP / 4u + a0 / 4u + e] = zacc[e];
                    }
                }
            }
            if (DECAY) {
                let g = vec4<f32>(exp(-slope(r) * f32(min(CHUNK, p.len - c * CHUNK))));
                // #unroll e TR * TC4
                {
                    acc[e] *= g;
                }
                // #unroll e TR4
                {
                    zacc[e] *= g;
                }
            }
        }
        let kb = rc * CP * a4n + a0 / 4u;
        for (var j = 0u; j < CHUNK; j++) {
            var kr: array<vec4<f32>, TR4>;
            var vr: array<vec4<f32>, TC4>;
            // #unroll e TR4
            {
                kr[e] = kw[kb + j * a4n + e];
            }
            // #unroll e TC4
            {
                vr[e] = v_quad(rc, vrow, c, j, d0 / 4u + e);
            }
            // #unroll i TR
            {
                let s = vec4<f32>(kr[i / 4u][i % 4u]);
                // #unroll e TC4
                {
                    acc[i * TC4 + e] = fma(s, vr[e], acc[i * TC4 + e]);
                }
            }
            if (d0 == 0u) {
                // #unroll e TR4
                {
                    zacc[e] += kr[e];
                }
            }
        }
    }
    // SCAN_IN: the carry after the segment; else this group's state.
    let sb = select(rg * width4(), cb, SCAN_IN);
    // #unroll e TR * TC4
    {
        let x = kv_kept(a0, e, acc[e]);
        if (SCAN_IN) {
            carry[sb + kv_entry(a0, d0, e)] = x;
        } else {
            state[sb + kv_entry(a0, d0, e)] = x;
        }
    }
    if (d0 == 0u) {
        // #unroll e TR4
        {
            if (SCAN_IN) {
                carry[sb + DKP * DVP / 4u + a0 / 4u + e] = zacc[e];
            } else {
                state[sb + DKP * DVP / 4u + a0 / 4u + e] = zacc[e];
            }
        }
    }
}

// Offset (vec4) of a TR×TC tile's entry e (row e / TC4, column quad e % TC4) in a state.
fn kv_entry(a0: u32, d0: u32, e: u32) -> u32 {
    return (a0 + e / TC4) * (DVP / 4u) + d0 / 4u + e % TC4;
}

// Padded feature rows (a >= dk) hold 0·v: NaN for an Inf in v, a term with no source.
fn kv_kept(a0: u32, e: u32, x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), x, a0 + e / TC4 < p.dk);
}

// Factors moving the 4 state entries e (feature rows of KV, or of z) of row r from chunk c−1's key
// log-scale to chunk c's (≤ 1, as the running maximum of an online softmax).
fn rescale(r: u32, c: u32, e: u32) -> vec4<f32> {
    var f = vec4<f32>(1.0);
    let kv = DKP * DVP;
    for (var t = 0u; t < 4u; t++) {
        let i = e * 4u + t;
        let a = select(i - kv, i / DVP, i < kv);
        if (a < p.dk) {
            let b = (r * p.n_chunks + c) * p.dk + a;
            f[t] = exp(logs[b - p.dk] - logs[b]);
        }
    }
    return f;
}

// One invocation per (row, 4 state entries). Causal: state[c] becomes the (decayed) state entering
// chunk c; non-causal: only the sum. Either way carry ends as the state after the segment.
@compute @workgroup_size(WG)
fn scan(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let w4 = width4();
    let r = gid / w4;
    let e = gid % w4;
    var run = vec4<f32>(0.0);
    if (p.first == 0u) {
        run = carry[gid];
    }
    for (var c = 0u; c < p.n_chunks; c++) {
        let i = (r * p.n_chunks + c) * w4 + e;
        let x = state[i];
        if (CAUSAL) {
            state[i] = run;
        }
        if (RESCALE && c > 0u) {
            run *= rescale(r, c, e);
        }
        if (DECAY) {
            let n = min(CHUNK, p.len - c * CHUNK);
            run = fma(vec4<f32>(exp(-slope(r) * f32(n))), run, x);
        } else {
            run += x;
        }
    }
    carry[gid] = run;
}

// One invocation per (row, entry of S [Dk, Dv] then z [Dk]): the state after all of L.
@compute @workgroup_size(WG)
fn totals(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let n = p.dk * p.dv + p.dk;
    let r = gid / n;
    let e = gid % n;
    let cb = r * width4() * 4u;
    if (e < p.dk * p.dv) {
        let a = e / p.dv;
        let d = e % p.dv;
        let i = cb + a * DVP + d;
        s_out[p.s_off + r * p.dk * p.dv + e] = carry[i / 4u][i % 4u];
    } else {
        let a = e - p.dk * p.dv;
        let i = cb + DKP * DVP + a;
        z_out[p.z_off + r * p.dk + a] = carry[i / 4u][i % 4u];
    }
}

// One invocation per (row, entry of the padded state W): carry = the initial state S [R, Dk, Dv],
// z [R, Dk] (bound where totals writes), zero in the padding; the next segment continues it.
@compute @workgroup_size(WG)
fn load_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let w = width4() * 4u;
    let r = gid / w;
    let e = gid % w;
    var x = 0.0;
    if (e < DKP * DVP) {
        let a = e / DVP;
        let d = e % DVP;
        if (a < p.dk && d < p.dv) {
            x = s_out[p.s_off + (r * p.dk + a) * p.dv + d];
        }
    } else if (e - DKP * DVP < p.dk) {
        x = z_out[p.z_off + r * p.dk + e - DKP * DVP];
    }
    carry[gid / 4u][gid % 4u] = x;
}

// Causal only: at[j][i] = λ^(i−j) φ(q_i)·φ(k_j) for j ≤ i in TR×SC tiles (rows j, cols i), only
// the tiles on or below the diagonal (those above are never written, and never read). SC = TC/2
// on CPU adapters: 20 half tiles spread over both SIMD batches of the workgroup where 10 full ones
// left the second batch 3/8 busy.
// SOFTMAX: the logits scale·s; without CAUSAL every tile, unmasked.
fn scores(rc: u32, r: u32, lid: u32) {
    let c4 = CP / 4u;
    let nbi = CP / SC;
    // Column tiles per row tile: tile (jb, ib) is live for ib >= jb·per.
    let per = select(0u, TR / SC, CAUSAL);
    let nbj = CP / TR;
    let nlive = nbj * nbi - per * nbj * (nbj - 1u) / 2u;
    let lam = -slope(r);
    for (var tile = lid; tile < nlive; tile += WG) {
        var jb = 0u;
        var rest = tile;
        loop {
            let n = nbi - jb * per;
            if (rest < n) {
                break;
            }
            rest -= n;
            jb++;
        }
        let j0 = jb * TR;
        let i0 = (jb * per + rest) * SC;
        var acc: array<vec4<f32>, TR * SC4>;
        // #unroll e TR * SC4
        {
            acc[e] = vec4<f32>(0.0);
        }
        for (var a = 0u; a < DKP; a++) {
            let b = (rc * DKP + a) * c4;
            var kr: array<vec4<f32>, TR4>;
            var qr: array<vec4<f32>, SC4>;
            // #unroll e TR4
            {
                kr[e] = kt[b + j0 / 4u + e];
            }
            // #unroll e SC4
            {
                qr[e] = qt[b + i0 / 4u + e];
            }
            // #unroll jj TR
            {
                let s = vec4<f32>(kr[jj / 4u][jj % 4u]);
                // #unroll e SC4
                {
                    acc[jj * SC4 + e] = fma(s, qr[e], acc[jj * SC4 + e]);
                }
            }
        }
        // #unroll jj TR
        {
            let j = j0 + jj;
            // #unroll e SC4
            {
                let i = vec4<u32>(i0 + e * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
                var w = acc[jj * SC4 + e];
                if (DECAY) {
                    w *= exp(lam * max(vec4<f32>(i) - f32(j), vec4<f32>(0.0)));
                }
                if (SOFTMAX) {
                    w *= p.scale;   // the logit, once per score
                }
                if (CAUSAL) {
                    w = select(vec4<f32>(0.0), w, vec4<u32>(j) <= i);
                }
                at[(j * CP + i0) / 4u + e] = w;
            }
        }
    }
}

// SOFTMAX: at[j][i], the logit scale·s (scores), becomes exp(scale·s − m_i) over the keys query
// i sees (j < nk, and j <= i when causal; m_i their maximum, NaN ignored as f64::max does), den_i
// their sum; four rows per invocation.
fn softmax_rows(nk: u32, lid: u32) {
    let c4 = CP / 4u;
    for (var i4 = lid; i4 < c4; i4 += WG) {
        let iv = vec4<u32>(i4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let jn = select(nk, min(nk, i4 * 4u + 4u), CAUSAL);
        var m = vec4<f32>(-3.4028235e38);
        for (var j = 0u; j < jn; j++) {
            let x = at[j * c4 + i4];
            let live = (vec4<u32>(j) <= iv) | vec4<bool>(!CAUSAL);
            m = select(m, x, live & (x > m));
        }
        var d = vec4<f32>(0.0);
        for (var j = 0u; j < jn; j++) {
            let x = at[j * c4 + i4] - m;
            let live = (vec4<u32>(j) <= iv) | vec4<bool>(!CAUSAL);
            // exp of -inf (a -inf logit) is exactly 0; NaN stays NaN.
            let w = select(select(exp(x), vec4<f32>(0.0), x < vec4<f32>(-200.0)), vec4<f32>(0.0), !live);
            at[j * c4 + i4] = w;
            d += w;
        }
        den[i4] = d;
    }
}

// One workgroup per (row, chunk): scores (causal), then the output in TR×TC tiles (rows i,
// cols d) = carried state term + masked scores × V, divided by the tile's own denominators
// den_i = λ^(i+1) φ(q_i)·z + Σ_j at[j][i] + ε (DEN; SOFTMAX: the row pass's sums). Without
// scores no barrier runs (lavapipe: W1's chunk_apply 29 -> 27 ms against a denominator pass).
@compute @workgroup_size(WG)
fn chunk_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let rc = wg_index(wg, nwg);
    if (rc >= p.total) {
        return;
    }
    let r = rc / p.n_chunks;
    let c = rc % p.n_chunks;
    let lam = -slope(r);
    let sb = select(r, rc, CAUSAL) * width4();
    // Keys of this chunk (none when q is the longer one).
    let nk = min(CHUNK, max(p.lk, c * CHUNK) - c * CHUNK);
    if ((CAUSAL || SOFTMAX) && !RESCALE) {
        scores(rc, r, lid);
        workgroupBarrier();
    }
    if (SOFTMAX) {
        softmax_rows(nk, lid);
        workgroupBarrier();
    }
    let c4 = CP / 4u;
    let d4n = DVP / 4u;
    let tv = DVP / TC;
    let nrt = CP / TR;
    let ntile = nrt * tv;
    // Query rows of this chunk (none when k is the longer one).
    let n = min(CHUNK, max(p.lq, c * CHUNK) - c * CHUNK);
    // PAIR: a row tile's keys grow with it, so an invocation takes row tiles r and nrt−1−r
    // (tiles u and u + half): equal work per invocation, and on CPU adapters (16×16 tiles,
    // 16 invocations) one SIMD batch instead of two whose slower half sets the pace.
    let half = select(ntile, (nrt + 1u) / 2u * tv, PAIR);
    for (var u = lid; u < half; u += WG) {
        for (var tile = u; tile < ntile; tile += half) {
            var rt = tile / tv;
            if (tile >= half) {
                rt = nrt - 1u - (tile - half) / tv;
            }
            let i0 = rt * TR;
            let d0 = (tile % half % tv) * TC;
            if (i0 >= n) {
                continue;
            }
            var acc: array<vec4<f32>, TR * TC4>;
            // #unroll e TR * TC4
            {
                acc[e] = vec4<f32>(0.0);
            }
            // The tile's denominators (rows i0.., as quads); each column tile repeats them.
            var dacc: array<vec4<f32>, TR4>;
            // #unroll e TR4
            {
                dacc[e] = vec4<f32>(0.0);
            }
            let nden = DEN && !SOFTMAX;
            // The state entering a sequence's first chunk is an empty sum: no term, not Inf·0.
            let na = select(DKP, 0u, (CAUSAL && c == 0u && p.first == 1u) || SOFTMAX);
            for (var a = 0u; a < na; a++) {
                var qr: array<vec4<f32>, TR4>;
                var sr: array<vec4<f32>, TC4>;
                // #unroll e TR4
                {
                    qr[e] = qt[(rc * DKP + a) * c4 + i0 / 4u + e];
                }
                // #unroll e TC4
                {
                    sr[e] = state[sb + a * d4n + d0 / 4u + e];
                }
                if (nden) {
                    let z = vec4<f32>(state[sb + DKP * d4n + a / 4u][a % 4u]);
                    // #unroll e TR4
                    {
                        dacc[e] = fma(qr[e], z, dacc[e]);
                    }
                }
                // #unroll ii TR
                {
                    let s = vec4<f32>(qr[ii / 4u][ii % 4u]);
                    // #unroll e TC4
                    {
                        acc[ii * TC4 + e] = fma(s, sr[e], acc[ii * TC4 + e]);
                    }
                }
            }
            if (DECAY) {
                // #unroll ii TR
                {
                    let g = vec4<f32>(exp(lam * f32(i0 + ii + 1u)));
                    // #unroll e TC4
                    {
                        acc[ii * TC4 + e] *= g;
                    }
                    dacc[ii / 4u][ii % 4u] *= g.x;
                }
            }
            if ((CAUSAL || SOFTMAX) && !RESCALE) {
                let vrow = v_row(r);
                // Keys before the tile's rows (all keys of the block without CAUSAL): every row
                // sees them.
                let jb = select(nk, i0, CAUSAL);
                for (var j = 0u; j < jb; j++) {
                    var ar: array<vec4<f32>, TR4>;
                    var vr: array<vec4<f32>, TC4>;
                    // #unroll e TR4
                    {
                        ar[e] = at[j * c4 + i0 / 4u + e];
                        if (nden) {
                            dacc[e] += ar[e];
                        }
                    }
                    // #unroll e TC4
                    {
                        vr[e] = v_quad(rc, vrow, c, j, d0 / 4u + e);
                    }
                    // #unroll ii TR
                    {
                        let s = vec4<f32>(ar[ii / 4u][ii % 4u]);
                        // #unroll e TC4
                        {
                            acc[ii * TC4 + e] = fma(s, vr[e], acc[ii * TC4 + e]);
                        }
                    }
                }
                // The diagonal block: row i takes keys j <= i only, so a NaN or Inf in a later v_j
                // never meets a masked 0.
                for (var j = i0; j < select(i0, i0 + TR, CAUSAL); j++) {
                    var ar: array<vec4<f32>, TR4>;
                    var vr: array<vec4<f32>, TC4>;
                    // #unroll e TR4
                    {
                        ar[e] = at[j * c4 + i0 / 4u + e];
                        if (nden) {
                            dacc[e] += ar[e];
                        }
                    }
                    // #unroll e TC4
                    {
                        vr[e] = v_quad(rc, vrow, c, j, d0 / 4u + e);
                    }
                    // #unroll ii TR
                    {
                        if (j <= i0 + ii) {
                            let s = vec4<f32>(ar[ii / 4u][ii % 4u]);
                            // #unroll e TC4
                            {
                                acc[ii * TC4 + e] = fma(s, vr[e], acc[ii * TC4 + e]);
                            }
                        }
                    }
                }
            }
            let ob = p.o_off + row_base(r, p.o_bs, p.o_hs, 1u) + c * CHUNK * p.o_ts;
            // Keep this loop small enough for NIR to unroll: a tile indexed dynamically leaves
            // registers for memory (2.5x slower on lavapipe).
            // #unroll k TR * TC4
            {
                let ii = k / TC4;
                let i = i0 + ii;
                var y = acc[k];
                if (SOFTMAX) {
                    // den >= 1 unless a logit is NaN or +Inf, or all are -inf: then NaN, as 0/0.
                    y = y / den[i / 4u][ii % 4u];
                } else if (DEN) {
                    let dn = dacc[ii / 4u][ii % 4u] + p.eps;
                    // 0/0 (all weights 0) -> 0; a NaN denominator still gives NaN.
                    y = select(y / dn, vec4<f32>(0.0), vec4<bool>(dn == 0.0));
                }
                let d = d0 + (k % TC4) * 4u;
                let o0 = ob + i * p.o_ts + d;
                // One branch per vec4 (put_o, from the prelude).
                if (i < n && d < p.dv) {
                    put_o(o0, p.dv - 1u - d, y);
                }
            }
        }
    }
}

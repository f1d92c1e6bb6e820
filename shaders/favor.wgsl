// FAVOR+ random features (Choromanski et al. 2021, Lemma 1, §2.3-2.4), written as f32 features
// for the chunked linear-attention kernels.
// x: [R, L, Dk] (queries or keys, storage dtype); omega: [M, Dk] f32;
// feat: [R, L, F] f32, F = M (positive) or 2M (trig: sin block, then cos block);
// logscale: [R, L] f32; head: [R] f32 (head_off: element offset into a caller's tensor).
// favor_proj:   feat_r = w_r.x' (register-tiled), read by favor_logits.
// favor_logits: x' = x d^(-1/4); positive: feat_r = w_r.x' - |x'|^2/2, logscale = max_r feat_r;
//               trig: feat_r = feat_{M+r} = w_r.x', logscale = |x'|^2/2.
// head_max:     head[r] = max_t logscale[r, t] (the key stabiliser, over all keys of a head).
// favor_exp_*:  positive: M^(-1/2) exp(feat - c); trig: M^(-1/2) exp(logscale - c) sin|cos(feat),
//               c = logscale[r, t] (row: queries, or one key in a decoding step) or head[r] (keys).
// Subtracting c cancels in num/den; it keeps the largest feature of a row (or head) at M^(-1/2).
// Positive features with per-feature key stabilisers (favor_attention; issue 11): chunks of CHUNK
// keys; kmax: [R, nc, M], krun: [R, L, M] f32 (causal only).
// key_chunk_max:   kmax[r, c, a] = max over the keys t of chunk c of feat[r, t, a] (logits).
// key_max_scan:    kmax[r, c, a] = max over chunks 0..=c (a running maximum per feature);
// key_max_fill:    non-causal, after it: every chunk gets the maximum over all L.
// key_running_max: causal: krun[r, t, a] = max over keys 0..=t of feat[r, ., a].
// favor_exp_keys:  feat = M^(-1/2) exp(feat - kmax[r, c(t), a]) <= M^(-1/2); causal: the logits
//                  are kept in xf [R, L, M] for favor_intra.
// favor_exp_query: cq = max_a (feat[a] + best_a), best = krun[r, t] (causal) or kmax, the row's
//                  largest log-term over the keys it sees (that term is exact, none exceeds it).
//                  Non-causal: feat = M^(-1/2) exp(feat + kmax[a] - cq). Causal: the features meet
//                  only the state entering t's chunk c, whose scale is kmax[c-1] <= krun[t]:
//                  feat = M^(-1/2) exp(feat + kmax[r, c-1, a] - cq) <= M^(-1/2) (0 in chunk 0);
//                  cq goes to logscale[r, t] and the logits to krun (same index) for favor_intra.
// extend_v:        xv = [v | 1]: [R, L, Dv + 1] f32 into feat (p.dk = Dv), the engine's values
//                  when it returns numerator and denominator unsplit.
// favor_intra_w:   causal: w_ij = Σ_{a in [a0, a1)} exp(lq_ia + lk_ja − cq_i) for j ≤ i in one
//                  chunk (0 above the diagonal) into wij [R, nc, CH, CH], one invocation per entry;
//                  the host cuts M into blocks of at most FEAT_BLOCK features (one dispatch each,
//                  the first writes, the rest add), so no invocation loops past lavapipe's limit.
// favor_intra:     causal: one invocation per output (row, t, e) adds its chunk's own keys j <= i,
//                  weights M^(-1) w_ij <= 1 (the log domain), to the engine's [num | den] of the
//                  earlier chunks (nd) and writes num / den (0 for 0/0). So no key is ever scaled
//                  by a later key's maximum (the old limit: a later key in i's chunk raising a
//                  feature's maximum by > 80 underflowed row i). It loops at most CH times.
// map_features: elementwise phi (FMAP codes of the prelude) to f32, for decoding steps.
// cast_f32:     xf = f32(x), so f16 values can enter the f32 kernels.
// max() is written as select(m, y, y > m) so a NaN never becomes the stabiliser.

override WG: u32 = 64u;     // invocations per workgroup, a power of two
override TRIG: u32 = 0u;    // 1: sin/cos features
override FMAP: u32 = 0u;    // map_features only: 0 elu+1, 1 relu, 2 identity
override CAUSAL: u32 = 0u;  // favor_exp_keys, favor_exp_query: 1 = causal stabilisers

struct Params {
    rows: u32,
    len: u32,
    dk: u32,
    m: u32,
    x_off: u32,
    head_off: u32,
    total: u32,
    scale: f32,   // d^(-1/4)
    norm: f32,    // M^(-1/2)
    chunk: u32,   // keys per chunk of the chunk engine (per-feature stabilisers)
    n_chunks: u32,
    o_off: u32,   // favor_intra: element offset of the output binding
    a0: u32,      // favor_intra_w: features [a0, a1) of this dispatch; favor_proj: Dk; scans
    a1: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> omega: array<f32>;
@group(0) @binding(3) var<storage, read_write> feat: array<f32>;
@group(0) @binding(4) var<storage, read_write> logscale: array<f32>;
@group(0) @binding(5) var<storage, read_write> head: array<f32>;
@group(0) @binding(6) var<storage, read_write> xf: array<f32>;
@group(0) @binding(7) var<storage, read_write> kmax: array<f32>;
@group(0) @binding(8) var<storage, read_write> krun: array<f32>;
@group(0) @binding(9) var<storage, read> nd: array<f32>;
@group(0) @binding(10) var<storage, read_write> ratio: array<f32>;
@group(0) @binding(11) var<storage, read_write> wij: array<f32>;

var<workgroup> red: array<f32, WG>;

const NEG_BIG: f32 = -3.4028235e38;

fn n_feat() -> u32 {
    return select(p.m, 2u * p.m, TRIG == 1u);
}

// Tree reductions over the workgroup; every invocation gets the result.
fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = fmax(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// One workgroup per position (r, t).
const PT: u32 = 8u;  // favor_proj: tokens and features per register tile (PROJ_TILE on the host)

// One invocation per PT×PT tile of (token, feature): feat[t, r] = ω_r·x'_t, PT + PT loads per
// PT·PT FMAs (loads, not arithmetic, bound CPU adapters). p.total = tiles; tokens = rows·len.
@compute @workgroup_size(WG)
fn favor_proj(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let nt = p.rows * p.len;
    let tf = (p.m + PT - 1u) / PT;
    let t0 = (gid / tf) * PT;
    let r0 = (gid % tf) * PT;
    var acc: array<f32, PT * PT>;
    // #unroll e PT * PT
    {
        acc[e] = 0.0;
    }
    // Dk in blocks [a0, a1) across dispatches (the first writes, the rest add): lavapipe stops
    // an invocation past 65 535 loop iterations, and each step of a runs the register loops too.
    if (p.a0 > 0u) {
        // #unroll i PT
        {
            // #unroll j PT
            {
                if (t0 + i < nt && r0 + j < p.m) {
                    acc[i * PT + j] = feat[(t0 + i) * n_feat() + r0 + j];
                }
            }
        }
    }
    for (var a = p.a0; a < p.a1; a++) {
        var xs: array<f32, PT>;
        var ws: array<f32, PT>;
        // #unroll i PT
        {
            // Past the last token or feature: re-read the last one (in the binding; not written).
            xs[i] = ld_x(p.x_off + min(t0 + i, nt - 1u) * p.dk + a) * p.scale;
            ws[i] = omega[min(r0 + i, p.m - 1u) * p.dk + a];
        }
        // #unroll i PT
        {
            // #unroll j PT
            {
                acc[i * PT + j] = fma(xs[i], ws[j], acc[i * PT + j]);
            }
        }
    }
    // #unroll i PT
    {
        // #unroll j PT
        {
            if (t0 + i < nt && r0 + j < p.m) {
                feat[(t0 + i) * n_feat() + r0 + j] = acc[i * PT + j];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn favor_logits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return;
    }
    let xb = p.x_off + wid * p.dk;
    var part = 0.0;
    for (var a = lid; a < p.dk; a += WG) {
        let y = ld_x(xb + a) * p.scale;
        part += y * y;
    }
    let half_sq = 0.5 * reduce_sum(lid, part);
    let fb = wid * n_feat();
    var mx = NEG_BIG;
    for (var r = lid; r < p.m; r += WG) {
        let dot = feat[fb + r];  // ω_r·x', from favor_proj
        if (TRIG == 1u) {
            feat[fb + r] = dot;
            feat[fb + p.m + r] = dot;
        } else {
            let u = dot - half_sq;
            feat[fb + r] = u;
            mx = fmax(mx, u);
        }
    }
    let row_max = reduce_max(lid, mx);
    if (lid == 0u) {
        logscale[wid] = select(row_max, half_sq, TRIG == 1u);
    }
}

// One workgroup per row r (head): the maximum log-scale over its L positions.
@compute @workgroup_size(WG)
fn head_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = wg_index(wg, nwg);
    if (r >= p.total) {
        return;
    }
    // Positions [a0, a1) of this dispatch (the host keeps (a1 − a0) / WG ≤ 32 768).
    var mx = NEG_BIG;
    for (var t = p.a0 + lid; t < p.a1; t += WG) {
        mx = fmax(mx, logscale[r * p.len + t]);
    }
    let h = reduce_max(lid, mx);
    if (lid == 0u) {
        head[p.head_off + r] = select(h, fmax(h, head[p.head_off + r]), p.a0 > 0u);
    }
}

fn finish(idx: u32, c: f32) {
    let f = n_feat();
    let pos = idx / f;
    if (TRIG == 1u) {
        let j = idx % f;
        let g = p.norm * exp(logscale[pos] - c);
        let y = feat[idx];
        feat[idx] = g * select(cos(y), sin(y), j < p.m);
    } else {
        feat[idx] = p.norm * exp(feat[idx] - c);
    }
}

// One invocation per feature element; the stabiliser is the position's own log-scale.
@compute @workgroup_size(WG)
fn favor_exp_row(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    finish(idx, logscale[idx / n_feat()]);
}

// One invocation per feature element; the stabiliser is the head's maximum.
@compute @workgroup_size(WG)
fn favor_exp_head(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let r = idx / (n_feat() * p.len);
    finish(idx, head[p.head_off + r]);
}

// One invocation per (row, chunk, feature).
@compute @workgroup_size(WG)
fn key_chunk_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let a = idx % p.m;
    let rc = idx / p.m;
    let r = rc / p.n_chunks;
    let t0 = (rc % p.n_chunks) * p.chunk;
    let t1 = min(t0 + p.chunk, p.len);
    var mx = NEG_BIG;
    for (var t = t0; t < t1; t++) {
        mx = fmax(mx, feat[(r * p.len + t) * p.m + a]);
    }
    kmax[idx] = mx;
}

// One invocation per (row, feature): the running maximum over chunks [a0, a1), continuing from
// chunk a0 − 1's (the host cuts nc into blocks of at most SCAN_BLOCK chunks, one dispatch each).
@compute @workgroup_size(WG)
fn key_max_scan(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let a = idx % p.m;
    let base = (idx / p.m) * p.n_chunks * p.m + a;
    var run = NEG_BIG;
    if (p.a0 > 0u) {
        run = kmax[base + (p.a0 - 1u) * p.m];
    }
    for (var c = p.a0; c < p.a1; c++) {
        run = fmax(run, kmax[base + c * p.m]);
        kmax[base + c * p.m] = run;
    }
}

// Non-causal, after key_max_scan: one invocation per (row, chunk, feature) takes the maximum over
// all L (the last chunk's running maximum).
@compute @workgroup_size(WG)
fn key_max_fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let a = idx % p.m;
    let last = ((idx / p.m) / p.n_chunks * p.n_chunks + p.n_chunks - 1u) * p.m + a;
    kmax[idx] = kmax[last];
}

// One invocation per (row, chunk, feature), after key_max_scan.
@compute @workgroup_size(WG)
fn key_running_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let a = idx % p.m;
    let rc = idx / p.m;
    let r = rc / p.n_chunks;
    let c = rc % p.n_chunks;
    let t0 = c * p.chunk;
    let t1 = min(t0 + p.chunk, p.len);
    var run = NEG_BIG;
    if (c > 0u) {
        run = kmax[idx - p.m];
    }
    for (var t = t0; t < t1; t++) {
        let i = (r * p.len + t) * p.m + a;
        run = fmax(run, feat[i]);
        krun[i] = run;
    }
}

// One invocation per key feature element.
@compute @workgroup_size(WG)
fn favor_exp_keys(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let pos = idx / p.m;
    let c = (pos % p.len) / p.chunk;
    let at = ((pos / p.len) * p.n_chunks + c) * p.m + idx % p.m;
    if (CAUSAL == 1u) {
        xf[idx] = feat[idx];
    }
    feat[idx] = p.norm * exp(feat[idx] - kmax[at]);
}

// One workgroup per query position.
@compute @workgroup_size(WG)
fn favor_exp_query(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return;
    }
    let c = (wid % p.len) / p.chunk;
    let kb = ((wid / p.len) * p.n_chunks + c) * p.m;
    let fb = wid * p.m;
    var mx = NEG_BIG;
    for (var a = lid; a < p.m; a += WG) {
        var best = kmax[kb + a];
        if (CAUSAL == 1u) {
            best = krun[fb + a];
        }
        mx = fmax(mx, feat[fb + a] + best);
    }
    let cq = reduce_max(lid, mx);
    if (CAUSAL == 1u) {
        if (lid == 0u) {
            logscale[wid] = cq;
        }
        for (var a = lid; a < p.m; a += WG) {
            let u = feat[fb + a];
            krun[fb + a] = u;
            let prev = kmax[select(kb, kb - p.m, c > 0u) + a];
            feat[fb + a] = select(0.0, p.norm * exp(u + prev - cq), c > 0u);
        }
        return;
    }
    for (var a = lid; a < p.m; a += WG) {
        feat[fb + a] = p.norm * exp(feat[fb + a] + kmax[kb + a] - cq);
    }
}

// One invocation per element of xv [R, L, Dv + 1].
@compute @workgroup_size(WG)
fn extend_v(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let we = p.dk + 1u;
    let e = idx % we;
    var y = 1.0;
    if (e < p.dk) {
        y = ld_x(p.x_off + (idx / we) * p.dk + e);
    }
    feat[idx] = y;
}

// One invocation per entry (row, chunk, i, j) of wij, chunks of p.chunk keys. lq = krun,
// lk = xf, cq = logscale.
@compute @workgroup_size(WG)
fn favor_intra_w(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let ch = p.chunk;
    let rc = idx / (ch * ch);
    let i = (idx / ch) % ch;
    let j = idx % ch;
    let c = rc % p.n_chunks;
    let n = min(ch, p.len - c * ch);
    var w = 0.0;
    if (j <= i && i < n) {
        let t0 = (rc / p.n_chunks) * p.len + c * ch;
        let qb = (t0 + i) * p.m;
        let kb = (t0 + j) * p.m;
        let cq = logscale[t0 + i];
        for (var a = p.a0; a < p.a1; a++) {
            w += exp(krun[qb + a] + xf[kb + a] - cq);
        }
    }
    if (p.a0 > 0u) {
        w += wij[idx];
    }
    wij[idx] = w;
}

// One invocation per output element (row, t, e), e < Dv = p.dk; xv = feat [R, L, Dv + 1].
@compute @workgroup_size(WG)
fn favor_intra(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let dv = p.dk;
    let we = dv + 1u;
    let e = idx % dv;
    let t = idx / dv;
    let r = t / p.len;
    let c = (t % p.len) / p.chunk;
    let i = (t % p.len) % p.chunk;
    let t0 = t - i;
    let wb = ((r * p.n_chunks + c) * p.chunk + i) * p.chunk;
    let w2 = p.norm * p.norm;
    var num = nd[t * we + e];
    var den = nd[t * we + dv];
    for (var j = 0u; j <= i; j++) {
        let w = w2 * wij[wb + j];
        num += w * feat[(t0 + j) * we + e];
        den += w;
    }
    // 0/0 (every weight underflowed) -> 0, as the engine's guard.
    ratio[p.o_off + t * dv + e] = select(num / den, 0.0, den == 0.0);
}

@compute @workgroup_size(WG)
fn map_features(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    feat[idx] = phi(ld_x(p.x_off + idx));
}

@compute @workgroup_size(WG)
fn cast_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    xf[idx] = ld_x(p.x_off + idx);
}

// Trig features, causal (favor_trig.rs): one key stabiliser per chunk, hk = ‖k'‖²/2 per key,
// kc [R, nc] its running maximum over chunks 0..=c, krun [R, L] over keys 0..=t (key_chunk_max,
// key_max_scan and key_running_max with p.m = 1). Row i's terms are all taken relative to krun_i.
// trig_fill_max: kmax [R, nc, F] = kc broadcast over F (bound at logscale), the engine's RESCALE.
@compute @workgroup_size(WG)
fn trig_fill_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    kmax[idx] = logscale[idx / n_feat()];
}

// One invocation per key feature element (feat holds ω_r·k' twice, logscale = hk, kmax = kc):
// xf = sin|cos (for trig_intra_w); feat = M^(-1/2) exp(hk_t − kc[c(t)]) sin|cos ≤ M^(-1/2).
@compute @workgroup_size(WG)
fn trig_exp_keys(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let f = n_feat();
    let pos = idx / f;
    let c = (pos % p.len) / p.chunk;
    let y = feat[idx];
    let u = select(cos(y), sin(y), idx % f < p.m);
    xf[idx] = u;
    feat[idx] = p.norm * exp(logscale[pos] - kmax[(pos / p.len) * p.n_chunks + c]) * u;
}

// One invocation per query feature element (feat holds ω_r·q' twice, kmax = kc, krun [R, L]):
// xf = sin|cos; feat = M^(-1/2) exp(kc[c−1] − krun_t) sin|cos, the scale of the state entering
// t's chunk relative to row t's largest key (0 in chunk 0). exp(‖q'‖²/2) cancels in the ratio.
@compute @workgroup_size(WG)
fn trig_exp_query(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let f = n_feat();
    let pos = idx / f;
    let c = (pos % p.len) / p.chunk;
    let y = feat[idx];
    let u = select(cos(y), sin(y), idx % f < p.m);
    xf[idx] = u;
    var g = 0.0;
    if (c > 0u) {
        g = p.norm * exp(kmax[(pos / p.len) * p.n_chunks + c - 1u] - krun[pos]) * u;
    }
    feat[idx] = g;
}

// As favor_intra_w for trig: w_ij = exp(hk_j − krun_i) Σ_{a in [a0, a1)} uq_ia uk_ja, j ≤ i in
// one chunk (feat = uq, xf = uk [R, L, F], logscale = hk, krun [R, L]); favor_intra adds M^(-1).
@compute @workgroup_size(WG)
fn trig_intra_w(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let ch = p.chunk;
    let rc = idx / (ch * ch);
    let i = (idx / ch) % ch;
    let j = idx % ch;
    let c = rc % p.n_chunks;
    let n = min(ch, p.len - c * ch);
    let f = n_feat();
    var w = 0.0;
    if (j <= i && i < n) {
        let t0 = (rc / p.n_chunks) * p.len + c * ch;
        let qb = (t0 + i) * f;
        let kb = (t0 + j) * f;
        var s = 0.0;
        for (var a = p.a0; a < p.a1; a++) {
            s = fma(feat[qb + a], xf[kb + a], s);
        }
        w = exp(logscale[t0 + j] - krun[t0 + i]) * s;
    }
    if (p.a0 > 0u) {
        w += wij[idx];
    }
    wij[idx] = w;
}

// FAVOR+ random features (Choromanski et al. 2021, Lemma 1, §2.3-2.4), written as f32 features
// for the chunked linear-attention kernels.
// x: [R, L, Dk] (queries or keys, storage dtype); omega: [M, Dk] f32;
// feat: [R, L, F] f32, F = M (positive) or 2M (trig: sin block, then cos block);
// logscale: [R, L] f32; head: [R] f32 (head_off: element offset into a caller's tensor).
// favor_proj:   x' = x d^(-1/4), register-tiled; positive: feat_r = w_r.x' - |x'|^2/2;
//               trig: feat_r = feat_{M+r} = w_r.x', logscale = |x'|^2/2.
// favor_logits: positive: logscale = max_r feat_r.
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
// query_max:       cq = max_a (feat[a] + best_a), best = krun[r, t] (causal) or kmax, the row's
//                  largest log-term over the keys it sees (that term is exact, none exceeds it).
// favor_exp_query: non-causal: feat = M^(-1/2) exp(feat + kmax[a] - cq). Causal: the features meet
//                  only the state entering t's chunk c, whose scale is kmax[c-1] <= krun[t]:
//                  feat = M^(-1/2) exp(feat + kmax[r, c-1, a] - cq) <= M^(-1/2) (0 in chunk 0);
//                  cq goes to logscale[r, t] and the logits to krun (same index) for favor_intra.
// extend_v:        xv = [v | 1]: [R, L, Dv + 1] f32 into feat (p.dk = Dv), the engine's values
//                  when it returns numerator and denominator unsplit.
// favor_intra_w:   causal: w_ij = Σ_{a in [a0, a1)} exp(lq_ia + lk_ja − cq_i) for j ≤ i in one
//                  chunk into wij [R, nc, CH, CH] (above the diagonal: unwritten, unread), one
//                  invocation per IT×IT tile of the lower triangle;
//                  the host cuts M into blocks of at most FEAT_BLOCK features (one dispatch each,
//                  the first writes, the rest add), so no invocation loops past lavapipe's limit.
// favor_intra:     causal: one invocation per IT×IT tile of outputs (rows t, dims e) adds its
//                  chunk's own keys j <= i,
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
// favor_proj with VEC_X: x and omega again, four elements per entry (the host checked x_off and
// Dk are multiples of 4).
@group(0) @binding(12) var<storage, read> x4: array<ST4>;
@group(0) @binding(13) var<storage, read> omega4: array<vec4<f32>>;
override VEC_X: bool = false;

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

// favor_proj: tokens and features per register tile (compile-time: it sizes function-scope
// arrays; the pipeline substitutes the host's TileFamily::proj_tile).
const PT: u32 = 16u;

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
    // Positive: ω_r·x' − ‖x'‖²/2 = Σ_a (ω_ra x'_a − x'_a²/2), so each block of Dk subtracts its
    // own part of the norm. Trig: the norm goes to logscale (the tile of features 0).
    var sq: array<f32, PT>;
    // #unroll i PT
    {
        sq[i] = 0.0;
    }
    if (VEC_X) {
        // Four steps of Dk per load (x_off, Dk and the block bounds are multiples of 4).
        for (var a4 = p.a0 / 4u; a4 < p.a1 / 4u; a4++) {
            var xs: array<vec4<f32>, PT>;
            var ws: array<vec4<f32>, PT>;
            // #unroll i PT
            {
                xs[i] = ld4_x4((p.x_off + min(t0 + i, nt - 1u) * p.dk) / 4u + a4) * p.scale;
                ws[i] = omega4[min(r0 + i, p.m - 1u) * (p.dk / 4u) + a4];
                sq[i] += dot(xs[i], xs[i]);
            }
            // #unroll i PT
            {
                // #unroll j PT
                {
                    acc[i * PT + j] += dot(xs[i], ws[j]);
                }
            }
        }
    } else {
        for (var a = p.a0; a < p.a1; a++) {
            var xs: array<f32, PT>;
            var ws: array<f32, PT>;
            // #unroll i PT
            {
                // Past the last token or feature: re-read the last one (in the binding; not
                // written).
                xs[i] = ld_x(p.x_off + min(t0 + i, nt - 1u) * p.dk + a) * p.scale;
                ws[i] = omega[min(r0 + i, p.m - 1u) * p.dk + a];
                sq[i] = fma(xs[i], xs[i], sq[i]);
            }
            // #unroll i PT
            {
                // #unroll j PT
                {
                    acc[i * PT + j] = fma(xs[i], ws[j], acc[i * PT + j]);
                }
            }
        }
    }
    // #unroll i PT
    {
        let half_sq = 0.5 * sq[i];
        if (TRIG == 1u && r0 == 0u && t0 + i < nt) {
            logscale[t0 + i] = select(half_sq, logscale[t0 + i] + half_sq, p.a0 > 0u);
        }
        // #unroll j PT
        {
            if (t0 + i < nt && r0 + j < p.m) {
                let f = (t0 + i) * n_feat() + r0 + j;
                if (TRIG == 1u) {
                    feat[f] = acc[i * PT + j];
                    feat[f + p.m] = acc[i * PT + j];
                } else {
                    feat[f] = acc[i * PT + j] - half_sq;
                }
            }
        }
    }
}

// Positive features: logscale = the largest logit of each position over features [a0, a1) (the
// host cuts M in blocks of SCAN_BLOCK; the first writes, the rest fold in). One invocation per
// position; p.total = positions.
@compute @workgroup_size(WG)
fn favor_logits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wg, nwg) * WG + lid;
    if (t >= p.total) {
        return;
    }
    var mx = NEG_BIG;
    if (p.a0 > 0u) {
        mx = logscale[t];
    }
    for (var r = p.a0; r < p.a1; r++) {
        mx = fmax(mx, feat[t * p.m + r]);
    }
    logscale[t] = mx;
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

// One invocation per key position, features [a0, a1) (blocks of SCAN_BLOCK): the position's
// divisions once, not per element (integer division is scalar on CPU adapters).
@compute @workgroup_size(WG)
fn favor_exp_keys(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wg, nwg) * WG + lid;
    if (t >= p.total) {
        return;
    }
    let kb = ((t / p.len) * p.n_chunks + (t % p.len) / p.chunk) * p.m;
    let fb = t * p.m;
    for (var a = p.a0; a < p.a1; a++) {
        let u = feat[fb + a];
        if (CAUSAL == 1u) {
            xf[fb + a] = u;
        }
        feat[fb + a] = p.norm * exp(u - kmax[kb + a]);
    }
}

// One invocation per query position: logscale = cq over features [a0, a1) (the host cuts M in
// blocks of SCAN_BLOCK; the first writes, the rest fold in).
@compute @workgroup_size(WG)
fn query_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wg, nwg) * WG + lid;
    if (t >= p.total) {
        return;
    }
    let kb = ((t / p.len) * p.n_chunks + (t % p.len) / p.chunk) * p.m;
    let fb = t * p.m;
    var mx = NEG_BIG;
    if (p.a0 > 0u) {
        mx = logscale[t];
    }
    for (var a = p.a0; a < p.a1; a++) {
        var best = kmax[kb + a];
        if (CAUSAL == 1u) {
            best = krun[fb + a];
        }
        mx = fmax(mx, feat[fb + a] + best);
    }
    logscale[t] = mx;
}

// One invocation per query position, features [a0, a1), after query_max.
@compute @workgroup_size(WG)
fn favor_exp_query(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wg, nwg) * WG + lid;
    if (t >= p.total) {
        return;
    }
    let c = (t % p.len) / p.chunk;
    let kb = ((t / p.len) * p.n_chunks + c) * p.m;
    let fb = t * p.m;
    let cq = logscale[t];
    for (var a = p.a0; a < p.a1; a++) {
        let u = feat[fb + a];
        if (CAUSAL == 1u) {
            krun[fb + a] = u;
            // The state entering chunk c is at chunk c − 1's scale (none in chunk 0).
            let prev = kmax[select(kb, kb - p.m, c > 0u) + a];
            feat[fb + a] = select(0.0, p.norm * exp(u + prev - cq), c > 0u);
        } else {
            feat[fb + a] = p.norm * exp(u + kmax[kb + a] - cq);
        }
    }
}

// One invocation per position of xv [R, L, Dv + 1], values [a0, a1).
@compute @workgroup_size(WG)
fn extend_v(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wg, nwg) * WG + lid;
    if (t >= p.total) {
        return;
    }
    let we = p.dk + 1u;
    for (var e = p.a0; e < p.a1; e++) {
        var y = 1.0;
        if (e < p.dk) {
            y = ld_x(p.x_off + t * p.dk + e);
        }
        feat[t * we + e] = y;
    }
}

// Register tiles of the intra-chunk terms: IT rows (queries) × IT columns (keys, or value dims),
// IT + IT loads per IT·IT exp or FMA (one load per term was the causal FAVOR+ bottleneck). The
// pipeline substitutes the host's INTRA_TILE.
const IT: u32 = 8u;

// Lower-triangle tile k (row-major, tj <= ti) of a chunk -> (ti, tj).
fn tri_tile(k: u32) -> vec2<u32> {
    var ti = u32((sqrt(f32(8u * k + 1u)) - 1.0) * 0.5);
    if ((ti + 1u) * (ti + 2u) / 2u <= k) {
        ti += 1u;
    }
    if (ti * (ti + 1u) / 2u > k) {
        ti -= 1u;
    }
    return vec2<u32>(ti, k - ti * (ti + 1u) / 2u);
}

// The work of one intra-weight invocation: chunk rc, rows i0.., columns j0.. (IT each), n rows in
// the chunk, t0 its first position (global). None when the tile lies past a ragged chunk's end.
struct WTile {
    rc: u32,
    i0: u32,
    j0: u32,
    n: u32,
    t0: u32,
}

fn w_tile(idx: u32) -> WTile {
    let nt = (p.chunk + IT - 1u) / IT;
    let ntri = nt * (nt + 1u) / 2u;
    let rc = idx / ntri;
    let tt = tri_tile(idx % ntri);
    let c = rc % p.n_chunks;
    let n = min(p.chunk, p.len - c * p.chunk);
    let t0 = (rc / p.n_chunks) * p.len + c * p.chunk;
    return WTile(rc, tt.x * IT, tt.y * IT, n, t0);
}

// Entry (i, j) of wij for tile w: written (added past the first feature block) where j <= i < n;
// entries above the diagonal are never written nor read.
fn put_w(w: WTile, i: u32, j: u32, v: f32) {
    let ii = w.i0 + i;
    let jj = w.j0 + j;
    if (ii < w.n && jj <= ii) {
        let at = (w.rc * p.chunk + ii) * p.chunk + jj;
        wij[at] = select(v, v + wij[at], p.a0 > 0u);
    }
}

// One invocation per lower-triangle IT×IT tile (row, chunk, i, j) of wij, chunks of p.chunk keys.
// lq = krun, lk = xf, cq = logscale.
@compute @workgroup_size(WG)
fn favor_intra_w(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let w = w_tile(idx);
    if (w.i0 >= w.n) {
        return;
    }
    var cq: array<f32, IT>;
    var qb: array<u32, IT>;
    var kb: array<u32, IT>;
    // #unroll i IT
    {
        // Rows or keys past the chunk's end re-read its last one (not written).
        let ii = w.t0 + min(w.i0 + i, w.n - 1u);
        cq[i] = logscale[ii];
        qb[i] = ii * p.m;
        kb[i] = (w.t0 + min(w.j0 + i, w.n - 1u)) * p.m;
    }
    var acc: array<f32, IT * IT>;
    // #unroll e IT * IT
    {
        acc[e] = 0.0;
    }
    for (var a = p.a0; a < p.a1; a++) {
        var lq: array<f32, IT>;
        var lk: array<f32, IT>;
        // #unroll i IT
        {
            lq[i] = krun[qb[i] + a];
            lk[i] = xf[kb[i] + a];
        }
        // #unroll i IT
        {
            // #unroll j IT
            {
                acc[i * IT + j] += exp(lq[i] + lk[j] - cq[i]);
            }
        }
    }
    // #unroll i IT
    {
        // #unroll j IT
        {
            put_w(w, i, j, acc[i * IT + j]);
        }
    }
}

// One invocation per (row, chunk, IT rows, IT value dims e < Dv = p.dk); xv = feat [R, L, Dv + 1].
// Adds the chunk's own keys j <= i, weights M^(-1) w_ij <= 1, to nd and writes the ratio.
@compute @workgroup_size(WG)
fn favor_intra(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wg, nwg) * WG + lid;
    if (idx >= p.total) {
        return;
    }
    let dv = p.dk;
    let we = dv + 1u;
    let ch = p.chunk;
    let ne = (dv + IT - 1u) / IT;
    let nt = (ch + IT - 1u) / IT;
    let e0 = (idx % ne) * IT;
    let i0 = ((idx / ne) % nt) * IT;
    let rc = idx / (ne * nt);
    let c = rc % p.n_chunks;
    let n = min(ch, p.len - c * ch);
    if (i0 >= n) {
        return;
    }
    let t0 = (rc / p.n_chunks) * p.len + c * ch;
    let w2 = p.norm * p.norm;
    var wb: array<u32, IT>;
    var den: array<f32, IT>;
    var num: array<f32, IT * IT>;
    // #unroll i IT
    {
        // Rows past the chunk's end or dims past Dv re-read the last one (not written).
        let t = t0 + min(i0 + i, n - 1u);
        wb[i] = (rc * ch + min(i0 + i, n - 1u)) * ch;
        den[i] = nd[t * we + dv];
        // #unroll e IT
        {
            num[i * IT + e] = nd[t * we + min(e0 + e, dv - 1u)];
        }
    }
    // Keys before the tile's rows: every row sees them.
    for (var j = 0u; j < i0; j++) {
        var ws: array<f32, IT>;
        var vs: array<f32, IT>;
        // #unroll i IT
        {
            ws[i] = w2 * wij[wb[i] + j];
            vs[i] = feat[(t0 + j) * we + min(e0 + i, dv - 1u)];
        }
        // #unroll i IT
        {
            den[i] += ws[i];
            // #unroll e IT
            {
                num[i * IT + e] = fma(ws[i], vs[e], num[i * IT + e]);
            }
        }
    }
    // The diagonal block: row i takes keys j <= i only (a NaN in a later v_j stays out of it;
    // wij above the diagonal is never written).
    for (var j = i0; j < min(i0 + IT, n); j++) {
        var ws: array<f32, IT>;
        var vs: array<f32, IT>;
        // #unroll i IT
        {
            ws[i] = w2 * wij[wb[i] + j];
            vs[i] = feat[(t0 + j) * we + min(e0 + i, dv - 1u)];
        }
        // #unroll i IT
        {
            let on = j <= i0 + i;
            den[i] += select(0.0, ws[i], on);
            // #unroll e IT
            {
                num[i * IT + e] += select(0.0, ws[i] * vs[e], on);
            }
        }
    }
    // #unroll i IT
    {
        // #unroll e IT
        {
            if (i0 + i < n && e0 + e < dv) {
                // 0/0 (every weight underflowed) -> 0, as the engine's guard.
                let d = den[i];
                let y = select(num[i * IT + e] / d, 0.0, d == 0.0);
                ratio[p.o_off + (t0 + i0 + i) * dv + e0 + e] = y;
            }
        }
    }
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
    let w = w_tile(idx);
    if (w.i0 >= w.n) {
        return;
    }
    let f = n_feat();
    var rq: array<f32, IT>;
    var hk: array<f32, IT>;
    var qb: array<u32, IT>;
    var kb: array<u32, IT>;
    // #unroll i IT
    {
        // Rows or keys past the chunk's end re-read its last one (not written).
        let ti = w.t0 + min(w.i0 + i, w.n - 1u);
        let tj = w.t0 + min(w.j0 + i, w.n - 1u);
        rq[i] = krun[ti];
        hk[i] = logscale[tj];
        qb[i] = ti * f;
        kb[i] = tj * f;
    }
    var acc: array<f32, IT * IT>;
    // #unroll e IT * IT
    {
        acc[e] = 0.0;
    }
    for (var a = p.a0; a < p.a1; a++) {
        var uq: array<f32, IT>;
        var uk: array<f32, IT>;
        // #unroll i IT
        {
            uq[i] = feat[qb[i] + a];
            uk[i] = xf[kb[i] + a];
        }
        // #unroll i IT
        {
            // #unroll j IT
            {
                acc[i * IT + j] = fma(uq[i], uk[j], acc[i * IT + j]);
            }
        }
    }
    // #unroll i IT
    {
        // #unroll j IT
        {
            put_w(w, i, j, exp(hk[j] - rq[i]) * acc[i * IT + j]);
        }
    }
}

// FAVOR+ random features (Choromanski et al. 2021, Lemma 1, §2.3-2.4), written as f32 features
// for the chunked linear-attention kernels.
// x: [R, L, Dk] (queries or keys, storage dtype); omega: [M, Dk] f32;
// feat: [R, L, F] f32, F = M (positive) or 2M (trig: sin block, then cos block);
// logscale: [R, L] f32; head: [R] f32 (head_off: element offset into a caller's tensor).
// favor_logits: x' = x d^(-1/4); positive: feat_r = w_r.x' - |x'|^2/2, logscale = max_r feat_r;
//               trig: feat_r = feat_{M+r} = w_r.x', logscale = |x'|^2/2.
// head_max:     head[r] = max_t logscale[r, t] (the key stabiliser, over all keys of a head).
// favor_exp_*:  positive: M^(-1/2) exp(feat - c); trig: M^(-1/2) exp(logscale - c) sin|cos(feat),
//               c = logscale[r, t] (row: queries, or one key in a decoding step) or head[r] (keys).
// Subtracting c cancels in num/den; it keeps the largest feature of a row (or head) at M^(-1/2).
// map_features: elementwise phi (FMAP codes of the prelude) to f32, for decoding steps.
// cast_f32:     xf = f32(x), so f16 values can enter the f32 kernels.
// max() is written as select(m, y, y > m) so a NaN never becomes the stabiliser.

override WG: u32 = 64u;     // invocations per workgroup, a power of two
override TRIG: u32 = 0u;    // 1: sin/cos features
override FMAP: u32 = 0u;    // map_features only: 0 elu+1, 1 relu, 2 identity

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
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> omega: array<f32>;
@group(0) @binding(3) var<storage, read_write> feat: array<f32>;
@group(0) @binding(4) var<storage, read_write> logscale: array<f32>;
@group(0) @binding(5) var<storage, read_write> head: array<f32>;
@group(0) @binding(6) var<storage, read_write> xf: array<f32>;

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
        var dot = 0.0;
        for (var a = 0u; a < p.dk; a++) {
            dot += omega[r * p.dk + a] * (ld_x(xb + a) * p.scale);
        }
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
    var mx = NEG_BIG;
    for (var t = lid; t < p.len; t += WG) {
        mx = fmax(mx, logscale[r * p.len + t]);
    }
    let h = reduce_max(lid, mx);
    if (lid == 0u) {
        head[p.head_off + r] = h;
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

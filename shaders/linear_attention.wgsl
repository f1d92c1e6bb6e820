// Kernelized linear attention (Katharopoulos et al. 2020, eqs. 4-6 and 16-20), chunked form.
// q, k: [R, L, Dk]; v: [R, L, Dv]; o: [R, L, Dv], row-major, R = rows (batch x heads) in this pass.
// state: [R, n_chunks, W] f32 with W = Dk*Dv + Dk: per chunk phi(K_c)^T V_c then sum phi(K_c).
// Pipeline: chunk_state -> [chunk_total: S_out [R, Dk, Dv], z_out [R, Dk], for prefill]
//           -> scan_chunks (exclusive prefix if causal, total in chunk 0 if not)
//           -> chunk_apply (intra-chunk masked product + phi(Q) S).
// Denominator guard: a row whose denominator is exactly 0 (every weight 0, eps = 0) outputs 0.

override FMAP: u32 = 0u;    // feature map: 0 elu+1, 1 relu, 2 identity, 3 elu
override WG: u32 = 256u;    // invocations per workgroup
override CHUNK: u32 = 64u;  // rows per chunk; sized on the host from the workgroup-memory limit

struct Params {
    rows: u32,
    len: u32,
    dk: u32,
    dv: u32,
    n_chunks: u32,
    flags: u32,   // bit 0 causal, bit 1 denominator
    eps: f32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    total: u32,
    s_off: u32,
    z_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<OT>;
@group(0) @binding(6) var<storage, read_write> s_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> z_out: array<f32>;

var<workgroup> scores: array<f32, CHUNK * CHUNK>;
var<workgroup> den: array<f32, CHUNK>;

fn width() -> u32 {
    return p.dk * p.dv + p.dk;
}

// One workgroup per (row, chunk): phi(K_c)^T V_c and sum phi(K_c).
@compute @workgroup_size(WG)
fn chunk_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return;
    }
    let r = wid / p.n_chunks;
    let c = wid % p.n_chunks;
    let t0 = c * CHUNK;
    let t1 = min(t0 + CHUNK, p.len);
    let kb = p.k_off + r * p.len * p.dk;
    let vb = p.v_off + r * p.len * p.dv;
    let sb = (r * p.n_chunks + c) * width();
    let kv = p.dk * p.dv;
    for (var e = lid; e < width(); e += WG) {
        var acc = 0.0;
        if (e < kv) {
            let a = e / p.dv;
            let d = e % p.dv;
            for (var t = t0; t < t1; t++) {
                acc += phi(ld_k(kb + t * p.dk + a)) * ld_v(vb + t * p.dv + d);
            }
        } else {
            let a = e - kv;
            for (var t = t0; t < t1; t++) {
                acc += phi(ld_k(kb + t * p.dk + a));
            }
        }
        state[sb + e] = acc;
    }
}

// One invocation per (row, state entry): the sum over all chunks, i.e. S and z after the last row.
@compute @workgroup_size(WG)
fn chunk_total(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let w = width();
    let r = gid / w;
    let e = gid % w;
    var run = 0.0;
    for (var c = 0u; c < p.n_chunks; c++) {
        run += state[(r * p.n_chunks + c) * w + e];
    }
    let kv = p.dk * p.dv;
    if (e < kv) {
        s_out[p.s_off + r * kv + e] = run;
    } else {
        z_out[p.z_off + r * p.dk + e - kv] = run;
    }
}

// One invocation per (row, state entry): prefix over chunks.
@compute @workgroup_size(WG)
fn scan_chunks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let w = width();
    let r = gid / w;
    let e = gid % w;
    let causal = (p.flags & 1u) != 0u;
    var run = 0.0;
    for (var c = 0u; c < p.n_chunks; c++) {
        let i = (r * p.n_chunks + c) * w + e;
        let x = state[i];
        if (causal) {
            state[i] = run;
        }
        run += x;
    }
    if (!causal) {
        state[r * p.n_chunks * w + e] = run;
    }
}

// One workgroup per (row, chunk): o_i = (sum_{j<=i in chunk} (phi q_i . phi k_j) v_j + phi(q_i) S)
//                                       / (sum_{j<=i in chunk} phi q_i . phi k_j + phi(q_i) . z + eps)
@compute @workgroup_size(WG)
fn chunk_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return;
    }
    let r = wid / p.n_chunks;
    let c = wid % p.n_chunks;
    let causal = (p.flags & 1u) != 0u;
    let use_den = (p.flags & 2u) != 0u;
    let t0 = c * CHUNK;
    let n = min(t0 + CHUNK, p.len) - t0;
    let qb = p.q_off + (r * p.len + t0) * p.dk;
    let kb = p.k_off + (r * p.len + t0) * p.dk;
    let vb = p.v_off + (r * p.len + t0) * p.dv;
    let ob = p.o_off + (r * p.len + t0) * p.dv;
    let sb = (r * p.n_chunks + select(0u, c, causal)) * width();
    let zb = sb + p.dk * p.dv;

    if (causal) {
        for (var e = lid; e < n * n; e += WG) {
            let i = e / n;
            let j = e % n;
            var s = 0.0;
            if (j <= i) {
                for (var a = 0u; a < p.dk; a++) {
                    s += phi(ld_q(qb + i * p.dk + a)) * phi(ld_k(kb + j * p.dk + a));
                }
            }
            scores[i * CHUNK + j] = s;
        }
    }
    workgroupBarrier();
    if (use_den) {
        for (var i = lid; i < n; i += WG) {
            var d = 0.0;
            for (var a = 0u; a < p.dk; a++) {
                d += phi(ld_q(qb + i * p.dk + a)) * state[zb + a];
            }
            if (causal) {
                for (var j = 0u; j <= i; j++) {
                    d += scores[i * CHUNK + j];
                }
            }
            den[i] = d + p.eps;
        }
    }
    workgroupBarrier();
    for (var e = lid; e < n * p.dv; e += WG) {
        let i = e / p.dv;
        let d = e % p.dv;
        var num = 0.0;
        for (var a = 0u; a < p.dk; a++) {
            num += phi(ld_q(qb + i * p.dk + a)) * state[sb + a * p.dv + d];
        }
        if (causal) {
            for (var j = 0u; j <= i; j++) {
                num += scores[i * CHUNK + j] * ld_v(vb + j * p.dv + d);
            }
        }
        var out = num;
        if (use_den) {
            // 0/0 (all weights 0) -> 0; a NaN denominator still gives NaN.
            out = select(num / den[i], 0.0, den[i] == 0.0);
        }
        st_o(ob + i * p.dv + d, out);
    }
}

// FAVOR+ over real-world batches (issue 14): one sequence at a time, read through strides, with the
// causal positive state carried in and out (src/attention/favor_batch.rs).
// A sequence: batch entry b, tokens [t0, t0 + n), all H heads; its dense copy is [H, n, D] f32.
// seq_gather:    dense[h, t, e] = f32(x[x_off + base + (h / group)·hs + (t0 + t)·ts + e]), base = b·bs
//                (group = Hq / Hkv for k and v under GQA: query head h reads kv head h / group).
// seq_store:     out[x_off + base + h·hs + (t0 + t)·ts + e] = dense[h, t, e] (only these tokens).
// fold_max:      dst[r·stride + t·M + a] = max(dst[..], m0[m_off + r·M + a]) for t < count: the
//                initial state's log-scale m0 joins the key maxima (kmax of chunk 0, krun of the
//                keys of chunk 0), so every later stabiliser is at least m0.
// favor_initial: nd[r, t, e] += M^(−1) Σ_a exp(lq[r, t, a] + m0[r, a] − cq[r, t]) [S0 | z0][r, a, e]
//                (e ≤ Dv): what the initial state adds to row t (the engine starts from zero).
//                Every exponent is ≤ 0: cq is the row's largest log-term and krun ≥ m0.
// favor_final:   S[r, a, e] = M^(1/2) tot[r, a, e] + exp(m0 − mf) S0[r, a, e] (e < Dv; column Dv
//                gives z), m[r, a] = mf = kmax[r, nc − 1, a]: the state after the last token, in
//                the state's scale (no M^(−1/2)), from the engine's totals tot [R, M, Dv + 1].
// max() is written as select(m, y, y > m) so a NaN never becomes the stabiliser.

override WG: u32 = 64u;

struct Params {
    heads: u32,
    n: u32,
    d: u32,
    t0: u32,
    base: u32,
    hs: u32,
    ts: u32,
    total: u32,
    x_off: u32,
    m: u32,
    stride: u32,
    count: u32,
    m_off: u32,
    s_off: u32,
    z_off: u32,
    norm: f32,
    group: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read_write> dense: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<OT>;
@group(0) @binding(4) var<storage, read> m0: array<f32>;
@group(0) @binding(5) var<storage, read> s0: array<f32>;
@group(0) @binding(6) var<storage, read> z0: array<f32>;
@group(0) @binding(7) var<storage, read> lq: array<f32>;
@group(0) @binding(8) var<storage, read> cq: array<f32>;
@group(0) @binding(9) var<storage, read_write> s_fin: array<f32>;
@group(0) @binding(10) var<storage, read_write> z_fin: array<f32>;
@group(0) @binding(11) var<storage, read_write> m_fin: array<f32>;

fn gidx(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return wg_index(wg, nwg) * WG + lid;
}

// The strided element of (head h, token t of the sequence, feature e).
fn strided(i: u32) -> u32 {
    let e = i % p.d;
    let t = (i / p.d) % p.n;
    let h = i / (p.d * p.n);
    return p.x_off + p.base + (h / p.group) * p.hs + (p.t0 + t) * p.ts + e;
}

@compute @workgroup_size(WG)
fn seq_gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gidx(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    dense[i] = ld_x(strided(i));
}

@compute @workgroup_size(WG)
fn seq_store(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gidx(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    st_out(strided(i), dense[i]);
}

// One invocation per (row r, t < count, feature a); p.total = rows·count·M.
@compute @workgroup_size(WG)
fn fold_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gidx(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let a = i % p.m;
    let t = (i / p.m) % p.count;
    let r = i / (p.m * p.count);
    let j = r * p.stride + t * p.m + a;
    let y = m0[p.m_off + r * p.m + a];
    let cur = dense[j];
    dense[j] = select(cur, y, y > cur);
}

// One invocation per (row r, token t, column e ≤ Dv) of nd [R, n, Dv + 1]; p.d = Dv.
@compute @workgroup_size(WG)
fn favor_initial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = gidx(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let we = p.d + 1u;
    let e = i % we;
    let rt = i / we;
    let r = rt / p.n;
    let c = cq[rt];
    var acc = 0.0;
    for (var a = 0u; a < p.m; a++) {
        var y = 0.0;
        if (e < p.d) {
            y = s0[p.s_off + (r * p.m + a) * p.d + e];
        } else {
            y = z0[p.z_off + r * p.m + a];
        }
        acc += exp(lq[rt * p.m + a] + m0[p.m_off + r * p.m + a] - c) * y;
    }
    dense[i] += p.norm * p.norm * acc;
}

// One invocation per (row r, feature a, column e ≤ Dv); dense = the engine's totals
// [R, M, Dv + 1], lq = kmax [R, nc, M] (p.count = nc), p.d = Dv.
@compute @workgroup_size(WG)
fn favor_final(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gidx(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let we = p.d + 1u;
    let e = i % we;
    let ra = i / we;
    let a = ra % p.m;
    let r = ra / p.m;
    let mf = lq[(r * p.count + p.count - 1u) * p.m + a];
    let f = exp(m0[p.m_off + ra] - mf);
    let tot = dense[i] / p.norm;
    if (e < p.d) {
        let j = ra * p.d + e;
        s_fin[p.s_off + j] = tot + f * s0[p.s_off + j];
    } else {
        z_fin[p.z_off + ra] = tot + f * z0[p.z_off + ra];
        m_fin[p.m_off + ra] = mf;
    }
}

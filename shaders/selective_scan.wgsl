// Mamba selective scan (S6; Gu & Dao 2023, arXiv 2312.00752, Alg. 2, ZOH A / Euler B):
//   dt = softplus(delta + delta_bias), h_t = exp(dt A) h_{t-1} + dt B_t u_t,
//   y_t = sum_n C_t h_t + D u_t, out_t = y_t silu(z_t).
// Layout (mamba's selective_scan_ref): u, delta, z [B, D, L]; A [D, N]; B, C [B, N, L]; D,
// delta_bias [D]; states [B, D, N] f32. A pass holds rows r = (b, d) of [r0, r0 + rows).
// Parallel over L: a lane is (row, block of NB states, chunk of `chunk` steps).
//   prep: (Δ, Δ u) per (row, t) into dtu;
//   chunk_state: each lane runs its chunk from h = 0 -> (prod of Abar, local state) per state;
//   carry_up / carry_down: associative scan of those pairs along the chunks of every (row, n),
//     blocks of `blk` chunks per invocation, level upon level (no loop grows with L);
//   chunk_apply: each lane replays its chunk from the carried-in state, y partial sums over its
//     NB states to ypart, the last chunk writes the final state;
//   finish: out = (sum of partials + D u) silu(z).
// Decode (one token, state in -> state out) is prep, chunk_apply and finish with L = 1.

override WG: u32 = 64u;
const NB: u32 = 16u;

struct Params {
    rows: u32,    // rows (b, d) in this pass
    len: u32,     // L
    n: u32,       // N
    dim: u32,     // D
    r0: u32,      // first global row of the pass
    chunk: u32,   // steps per chunk
    nchunks: u32, // chunks per row
    flags: u32,   // 1: D, 2: z, 4: delta_bias, 8: softplus, 16: initial state
    x_off: u32,   // element offset of the pass's first row in u, delta, z
    bc_off: u32,  // element offset of batch b0 in B, C
    out_off: u32, // element offset in out
    st_off: u32,  // element offset in the states
    b0: u32,      // first batch of the pass
    m: u32,       // carry scan: length of the rows at this level
    blk: u32,     // carry scan: elements per invocation
    total: u32,   // invocations in use
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> u: array<ST>;
@group(0) @binding(2) var<storage, read> delta: array<ST>;
@group(0) @binding(3) var<storage, read> a_mat: array<ST>;
@group(0) @binding(4) var<storage, read> b_mat: array<ST>;
@group(0) @binding(5) var<storage, read> c_mat: array<ST>;
@group(0) @binding(6) var<storage, read> d_skip: array<ST>;
@group(0) @binding(7) var<storage, read> z: array<ST>;
@group(0) @binding(8) var<storage, read> delta_bias: array<ST>;
@group(0) @binding(9) var<storage, read> h_init: array<f32>;
@group(0) @binding(10) var<storage, read_write> carry: array<vec2<f32>>;
@group(0) @binding(11) var<storage, read_write> agg: array<vec2<f32>>;
@group(0) @binding(12) var<storage, read_write> ypart: array<f32>;
@group(0) @binding(13) var<storage, read_write> out: array<OT>;
@group(0) @binding(14) var<storage, read_write> h_last: array<f32>;
// (Δ_t, Δ_t u_t) of every (local row, t): computed once, read by both chunk passes.
@group(0) @binding(15) var<storage, read_write> dtu: array<vec2<f32>>;

// ln(1 + e^x) without losing small values (1 + e rounds to 1 below 2^-24).
fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    let e = exp(x);
    let w = 1.0 + e;
    if (w == 1.0) {
        return e;
    }
    return log(w) * (e / (w - 1.0));
}

// e^x − 1, accurate for small |x|: the state keeps h + (e^x − 1) h, so a slow decay (Ā within
// an ulp or two of 1) keeps its rate instead of rounding it (1 ulp of Ā = 1e-5 of a 0.5% decay).
fn expm1(x: f32) -> f32 {
    if (abs(x) < 0.1) {
        return x * (1.0 + x * (0.5 + x * (0.16666667 + x * (0.041666668
            + x * (0.008333334 + x * 0.0013888889)))));
    }
    return exp(x) - 1.0;
}

// Δ of element `i` of delta in channel `dd`.
fn dt_at(dd: u32, i: u32) -> f32 {
    var v = ld_delta(i);
    if ((p.flags & 4u) != 0u) {
        v += ld_delta_bias(dd);
    }
    if ((p.flags & 8u) != 0u) {
        v = softplus(v);
    }
    return v;
}

// The initial state of state `k` of local row `r` (zero without one).
fn h0(r: u32, k: u32) -> f32 {
    if ((p.flags & 16u) != 0u) {
        return h_init[p.st_off + r * p.n + k];
    }
    return 0.0;
}

// A lane: local row r, state block nb, chunk c.
struct Lane {
    r: u32,
    dd: u32,
    n0: u32,
    c: u32,
    xrow: u32, // the row's first element in dtu
    brow: u32,
}

fn lane(i: u32) -> Lane {
    let nblk = (p.n + NB - 1u) / NB;
    let c = i % p.nchunks;
    let rb = i / p.nchunks;
    let r = rb / nblk;
    let g = p.r0 + r;
    let n0 = (rb % nblk) * NB;
    let bb = g / p.dim - p.b0;
    return Lane(r, g % p.dim, n0, c, r * p.len, p.bc_off + (bb * p.n + n0) * p.len);
}

// One invocation per (local row, t): Δ and Δ u.
@compute @workgroup_size(WG)
fn prep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let dd = (p.r0 + i / p.len) % p.dim;
    let dt = dt_at(dd, p.x_off + i);
    dtu[i] = vec2<f32>(dt, dt * ld_u(p.x_off + i));
}

@compute @workgroup_size(WG)
fn chunk_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let ln = lane(i);
    var a: array<f32, NB>;
    var h: array<f32, NB>;
    for (var k = 0u; k < NB; k++) {
        h[k] = 0.0;
        a[k] = 0.0;
        if (ln.n0 + k < p.n) {
            a[k] = ld_a_mat(ln.dd * p.n + ln.n0 + k);
        }
    }
    let t0 = ln.c * p.chunk;
    let t1 = min(t0 + p.chunk, p.len);
    var sdt = 0.0;
    for (var t = t0; t < t1; t++) {
        let e = dtu[ln.xrow + t];
        let dt = e.x;
        let du = e.y;
        sdt += dt;
        for (var k = 0u; k < NB; k++) {
            if (ln.n0 + k < p.n) {
                h[k] += expm1(dt * a[k]) * h[k] + du * ld_b_mat(ln.brow + k * p.len + t);
            }
        }
    }
    for (var k = 0u; k < NB; k++) {
        if (ln.n0 + k < p.n) {
            // The chunk's Abar product as one exp of the summed exponent.
            carry[(ln.r * p.n + ln.n0 + k) * p.nchunks + ln.c] = vec2<f32>(exp(sdt * a[k]), h[k]);
        }
    }
}

// (a, h) pairs compose as (a_e, h_e) then (a_l, h_l) = (a_l a_e, a_l h_e + h_l).
fn combine(e: vec2<f32>, l: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(l.x * e.x, l.x * e.y + l.y);
}

// One invocation per (row, block of blk): inclusive scan of the block in place, total to agg.
@compute @workgroup_size(WG)
fn carry_up(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let nblk = (p.m + p.blk - 1u) / p.blk;
    let row = i / nblk;
    let j = i % nblk;
    let s = row * p.m + j * p.blk;
    let e = row * p.m + min((j + 1u) * p.blk, p.m);
    var acc = carry[s];
    for (var t = s + 1u; t < e; t++) {
        acc = combine(acc, carry[t]);
        carry[t] = acc;
    }
    agg[i] = acc;
}

// One invocation per element of blocks j >= 1: prefixed with the resolved total of blocks < j.
@compute @workgroup_size(WG)
fn carry_down(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let j = (i % p.m) / p.blk;
    if (j == 0u) {
        return;
    }
    let nblk = (p.m + p.blk - 1u) / p.blk;
    carry[i] = combine(agg[(i / p.m) * nblk + j - 1u], carry[i]);
}

@compute @workgroup_size(WG)
fn chunk_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let ln = lane(i);
    var a: array<f32, NB>;
    var h: array<f32, NB>;
    for (var k = 0u; k < NB; k++) {
        h[k] = 0.0;
        a[k] = 0.0;
        let n = ln.n0 + k;
        if (n < p.n) {
            a[k] = ld_a_mat(ln.dd * p.n + n);
            h[k] = h0(ln.r, n);
            if (ln.c > 0u) {
                let cv = carry[(ln.r * p.n + n) * p.nchunks + ln.c - 1u];
                h[k] = cv.x * h[k] + cv.y;
            }
        }
    }
    let t0 = ln.c * p.chunk;
    let t1 = min(t0 + p.chunk, p.len);
    let yrow = (i / p.nchunks) * p.len;
    for (var t = t0; t < t1; t++) {
        let e = dtu[ln.xrow + t];
        let dt = e.x;
        let du = e.y;
        var y = 0.0;
        for (var k = 0u; k < NB; k++) {
            if (ln.n0 + k < p.n) {
                let bc = ln.brow + k * p.len + t;
                h[k] += expm1(dt * a[k]) * h[k] + du * ld_b_mat(bc);
                y += ld_c_mat(bc) * h[k];
            }
        }
        ypart[yrow + t] = y;
    }
    if (ln.c + 1u == p.nchunks) {
        for (var k = 0u; k < NB; k++) {
            if (ln.n0 + k < p.n) {
                h_last[p.st_off + ln.r * p.n + ln.n0 + k] = h[k];
            }
        }
    }
}

// y (sum of the state blocks' partials) + D u, gated by silu(z).
fn gate(y: f32, dd: u32, xi: u32) -> f32 {
    var acc = y;
    if ((p.flags & 1u) != 0u) {
        acc += ld_d_skip(dd) * ld_u(xi);
    }
    if ((p.flags & 2u) != 0u) {
        let zz = ld_z(xi);
        // z / (1 + e^-z): e^-z = +Inf for z << 0 gives -0, never NaN.
        acc *= zz / (1.0 + exp(-zz));
    }
    return acc;
}

// One invocation per (local row, t).
@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let r = i / p.len;
    let t = i % p.len;
    let nblk = (p.n + NB - 1u) / NB;
    var y = 0.0;
    for (var nb = 0u; nb < nblk; nb++) {
        y += ypart[(r * nblk + nb) * p.len + t];
    }
    st_out(p.out_off + i, gate(y, (p.r0 + r) % p.dim, p.x_off + i));
}

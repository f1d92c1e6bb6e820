// Mamba-2 SSD (Dao & Gu 2024, arXiv 2405.21060, §6-7), the chunked (block) form:
//   H_t = exp(A_t) H_{t-1} + B_t^T x_t (H: [N, P] per (batch, head)), y_t = C_t H_t.
// Layout: X, Y [b, l, h, p]; A [b, l, h]; B, C [b, l, h, n]; states [b, h, n, p] f32.
// A pass holds batches [r0, r0 + rows); a lane is one (local batch, head); chunks of `chunk`
// steps along l.
//   seg: per (lane, chunk), running sums of A inside the chunk: forward inclusive (decay from
//     the chunk's start to t) and backward exclusive (decay from t to the chunk's end). Running
//     sums, never differences of a cumsum: a weight near 1 keeps its precision however strong
//     the decays before it were, and nothing grows (A <= 0 keeps every sum <= 0).
//   chunk_state: per (lane, chunk, state row i, block of PB columns), the chunk's state from
//     zero, sum_s exp(decay s..end) B_s[i] x_s, paired with the chunk's total decay.
//   (the carry scan of selective_scan.wgsl then scans those pairs along the chunks)
//   chunk_in: the state entering every chunk, [lane, chunk, n, p] (p contiguous for chunk_out).
//   chunk_out: per (lane, t, block of PB columns): the intra-chunk term
//     sum_{s<=t} exp(A_{s+1} + .. + A_t) (C_t . B_s) x_s (the decay-masked C B^T times X), with
//     the weight's exponent summed from t backwards, plus exp(decay start..t) C_t H_in.
//   final_state: the last chunk's carry applied to the initial state.

override WG: u32 = 64u;
const PB: u32 = 32u;

struct Params {
    rows: u32,    // batches in this pass
    len: u32,     // l
    heads: u32,   // h
    n: u32,       // state size
    p: u32,       // head dim
    chunk: u32,   // steps per chunk
    nchunks: u32, // chunks per lane
    flags: u32,   // 1: initial state
    x_off: u32,   // element offset of the pass's first batch in X
    a_off: u32,   // .. in A
    bc_off: u32,  // .. in B, C
    out_off: u32, // .. in Y
    st_off: u32,  // .. in the states
    npb: u32,     // column blocks, ceil(p / PB)
    total: u32,   // invocations in use
    _pad: u32,
}

@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> a_log: array<ST>;
@group(0) @binding(3) var<storage, read> b_mat: array<ST>;
@group(0) @binding(4) var<storage, read> c_mat: array<ST>;
@group(0) @binding(5) var<storage, read> h_init: array<f32>;
@group(0) @binding(6) var<storage, read_write> seg: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> carry: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> out: array<OT>;
@group(0) @binding(9) var<storage, read_write> h_last: array<f32>;
@group(0) @binding(10) var<storage, read_write> hin: array<f32>;

// The local token index (batch, t, head) of lane `lane` at step t.
fn tok(lane: u32, t: u32) -> u32 {
    let lb = lane / prm.heads;
    return (lb * prm.len + t) * prm.heads + lane % prm.heads;
}

fn h0(lane: u32, e: u32) -> f32 {
    if ((prm.flags & 1u) != 0u) {
        return h_init[prm.st_off + lane * prm.n * prm.p + e];
    }
    return 0.0;
}

// One invocation per (lane, chunk).
@compute @workgroup_size(WG)
fn seg_sums(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let lane = i / prm.nchunks;
    let c = i % prm.nchunks;
    let t0 = c * prm.chunk;
    let t1 = min(t0 + prm.chunk, prm.len);
    let row = lane * prm.len;
    var f = 0.0;
    for (var t = t0; t < t1; t++) {
        f += ld_a_log(prm.a_off + tok(lane, t));
        seg[row + t].x = f;
    }
    var r = 0.0;
    for (var t = t1; t > t0; t--) {
        seg[row + t - 1u].y = r;
        r += ld_a_log(prm.a_off + tok(lane, t - 1u));
    }
}

// One invocation per (lane, state row, column block, chunk), the chunk fastest (the carry
// layout: element-major, chunks contiguous).
@compute @workgroup_size(WG)
fn chunk_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let c = i % prm.nchunks;
    let rest = i / prm.nchunks;
    let p0 = (rest % prm.npb) * PB;
    let ni = (rest / prm.npb) % prm.n;
    let lane = rest / (prm.npb * prm.n);
    let w = min(PB, prm.p - p0);
    var acc: array<f32, PB>;
    for (var j = 0u; j < PB; j++) {
        acc[j] = 0.0;
    }
    let t0 = c * prm.chunk;
    let t1 = min(t0 + prm.chunk, prm.len);
    for (var t = t0; t < t1; t++) {
        let k = tok(lane, t);
        let bw = exp(seg[lane * prm.len + t].y) * ld_b_mat(prm.bc_off + k * prm.n + ni);
        let xr = prm.x_off + k * prm.p + p0;
        for (var j = 0u; j < w; j++) {
            acc[j] += bw * ld_x(xr + j);
        }
    }
    let decay = exp(seg[lane * prm.len + t1 - 1u].x);
    let e0 = (lane * prm.n + ni) * prm.p + p0;
    for (var j = 0u; j < w; j++) {
        carry[(e0 + j) * prm.nchunks + c] = vec2<f32>(decay, acc[j]);
    }
}

// The state entering chunk c at element e of lane `lane`'s [n, p] state.
fn h_in(lane: u32, e: u32, c: u32) -> f32 {
    let h = h0(lane, e);
    if (c == 0u) {
        return h;
    }
    let cv = carry[(lane * prm.n * prm.p + e) * prm.nchunks + c - 1u];
    return cv.x * h + cv.y;
}

// One invocation per (lane, chunk, state element).
@compute @workgroup_size(WG)
fn chunk_in(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let np = prm.n * prm.p;
    let lc = i / np;
    hin[i] = h_in(lc / prm.nchunks, i % np, lc % prm.nchunks);
}

// One invocation per (lane, t, column block).
@compute @workgroup_size(WG)
fn chunk_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let p0 = (i % prm.npb) * PB;
    let rest = i / prm.npb;
    let t = rest % prm.len;
    let lane = rest / prm.len;
    let w = min(PB, prm.p - p0);
    let c = t / prm.chunk;
    let c0 = c * prm.chunk;
    let kt = tok(lane, t);
    let crow = prm.bc_off + kt * prm.n;
    var acc: array<f32, PB>;
    for (var j = 0u; j < PB; j++) {
        acc[j] = 0.0;
    }
    // Intra-chunk: s from t back to the chunk's start, the decay exponent summed as it goes.
    var lg = 0.0;
    for (var s = t + 1u; s > c0; s--) {
        let ks = tok(lane, s - 1u);
        var dot = 0.0;
        let brow = prm.bc_off + ks * prm.n;
        for (var ni = 0u; ni < prm.n; ni++) {
            dot += ld_c_mat(crow + ni) * ld_b_mat(brow + ni);
        }
        let coef = exp(lg) * dot;
        let xr = prm.x_off + ks * prm.p + p0;
        for (var j = 0u; j < w; j++) {
            acc[j] += coef * ld_x(xr + j);
        }
        lg += ld_a_log(prm.a_off + ks);
    }
    // Inter-chunk: the carried-in state, decayed from the chunk's start to t.
    if (c > 0u || (prm.flags & 1u) != 0u) {
        let ew = exp(seg[lane * prm.len + t].x);
        let hrow = (lane * prm.nchunks + c) * prm.n * prm.p + p0;
        for (var ni = 0u; ni < prm.n; ni++) {
            let cw = ew * ld_c_mat(crow + ni);
            for (var j = 0u; j < w; j++) {
                acc[j] += cw * hin[hrow + ni * prm.p + j];
            }
        }
    }
    let orow = prm.out_off + kt * prm.p + p0;
    for (var j = 0u; j < w; j++) {
        st_out(orow + j, acc[j]);
    }
}

// One invocation per state element (lane, n, p).
@compute @workgroup_size(WG)
fn final_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let np = prm.n * prm.p;
    h_last[prm.st_off + i] = h_in(i / np, i % np, prm.nchunks);
}

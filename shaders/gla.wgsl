// The gated chunk engine: gated linear attention (GLA; Yang et al. 2024, arXiv 2312.06635) and
// Mamba-2's SSD (Dao & Gu 2024, arXiv 2405.21060, §6-7; C = q, B = k, X = v, A = g with one
// channel, scale 1), chunked:
//   S_t = diag(exp g_t) S_{t-1} + k_t^T v_t (S: [Dk, Dv] per lane), o_t = scale q_t S_t.
// g has `gd` channels: Dk (GLA, a gate per key channel) or 1 (SSD, one scalar per step and head,
// broadcast over the channels; the intra-chunk coefficients are then exp(..) (q_t . k_s)).
// Layout through strides: lane i (one (batch, head) or (sequence, head)) reads q, k, g at
//   q_off + (i / hpr) rs_k + (i % hpr) hs_k + t ts_k + d, and v, o alike (v_off / out_off, _v
//   strides), g alike with `gd` channels (g_off, _g strides): [B, H, L, D] (hpr 1, rs = L D) or
//   [B, L, H, D] (hpr H, rs = L H D, hs = D, ts = H D), or one packed sequence's heads
//   (hpr = lanes, rs 0). States [lanes, Dk, Dv] f32
//   from st_off. A dispatch holds `rows` lanes; chunks of CH steps along the lane's L. The
//   scratch (seg, carry, hin) is lane-major and contiguous.
//   seg_sums: per (row, chunk, gate channel d), running sums of g inside the chunk: forward
//     inclusive (decay from the chunk's start to t) and backward exclusive (t to the chunk's
//     end). Running sums, never differences of a cumsum, and no exp(-sum g) anywhere: every
//     exponent is <= 0, so nothing overflows with g down to -30 per step, and a weight near 1
//     keeps its precision however strong the decays before it were (the log-space form of
//     the paper's secondary chunking, taken down to single steps).
//   chunk_state: per (row, d, block of VB columns, chunk): the chunk's state from zero,
//     sum_s exp(g_{s+1} + .. + g_end)[d] k_s[d] v_s, paired with the chunk's total decay of d.
//   (the carry scan of selective_scan.wgsl scans those pairs along the chunks)
//   chunk_in: the state entering every chunk, [row, chunk, Dk, Dv] (Dv contiguous).
//   chunk_out: per (row, t, block of VB columns): the intra-chunk coefficients
//     a_ts = sum_d q_t[d] exp(g_{s+1} + .. + g_t)[d] k_s[d], the exponents summed from t
//     backwards in registers (DKB channels at a time), then sum_s a_ts v_s, plus
//     q_t exp(decay start..t) S_in; times scale.
//   final_state: the last chunk's carry applied to the initial state.

override WG: u32 = 64u;
const CH: u32 = 64u;
const DKB: u32 = 32u;
const VB: u32 = 64u;

struct Params {
    rows: u32,    // lanes in this dispatch
    len: u32,     // L
    dk: u32,
    dv: u32,
    nchunks: u32, // chunks per row
    flags: u32,   // 1: initial state
    scale: f32,
    nvb: u32,     // column blocks, ceil(dv / VB)
    q_off: u32,   // element offset of the pass's first row in q, k, g
    v_off: u32,   // .. in v
    out_off: u32, // .. in o
    st_off: u32,  // .. in the states
    total: u32,   // invocations in use
    hpr: u32,     // lanes per stride group (heads of a [B, L, H, D] entry or of a sequence)
    rs_k: u32,    // element strides of q, k, g: between groups, heads in a group, tokens
    hs_k: u32,
    ts_k: u32,
    rs_v: u32,    // .. of v and o
    hs_v: u32,
    ts_v: u32,
    g_off: u32,   // element offset of the dispatch's first lane in g
    rs_g: u32,    // strides of g
    hs_g: u32,
    ts_g: u32,
    gd: u32,      // gate channels: dk, or 1 (one scalar per step)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Element index of channel 0 of token t of lane `lane` in q, k, g (without q_off).
fn kat(lane: u32, t: u32) -> u32 {
    return (lane / prm.hpr) * prm.rs_k + (lane % prm.hpr) * prm.hs_k + t * prm.ts_k;
}

// .. in g, from g_off.
fn gat(lane: u32, t: u32) -> u32 {
    return prm.g_off + (lane / prm.hpr) * prm.rs_g + (lane % prm.hpr) * prm.hs_g + t * prm.ts_g;
}

// The segment sums of lane `lane`, step t, key channel d (all channels share one when gd = 1).
fn si(lane: u32, t: u32, d: u32) -> u32 {
    return (lane * prm.len + t) * prm.gd + select(0u, d, prm.gd > 1u);
}

// .. in v and o (without v_off / out_off).
fn vat(lane: u32, t: u32) -> u32 {
    return (lane / prm.hpr) * prm.rs_v + (lane % prm.hpr) * prm.hs_v + t * prm.ts_v;
}

@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read> g: array<ST>;
@group(0) @binding(5) var<storage, read> h_init: array<f32>;
@group(0) @binding(6) var<storage, read_write> seg: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> carry: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> out: array<OT>;
@group(0) @binding(9) var<storage, read_write> h_last: array<f32>;
@group(0) @binding(10) var<storage, read_write> hin: array<f32>;

fn h0(row: u32, e: u32) -> f32 {
    if ((prm.flags & 1u) != 0u) {
        return h_init[prm.st_off + row * prm.dk * prm.dv + e];
    }
    return 0.0;
}

// One invocation per (row, chunk, gate channel), the channel fastest.
@compute @workgroup_size(WG)
fn seg_sums(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let d = i % prm.gd;
    let rc = i / prm.gd;
    let c = rc % prm.nchunks;
    let row = rc / prm.nchunks;
    let t0 = c * CH;
    let t1 = min(t0 + CH, prm.len);
    var f = 0.0;
    for (var t = t0; t < t1; t++) {
        f += ld_g(gat(row, t) + d);
        seg[si(row, t, d)].x = f;
    }
    var r = 0.0;
    for (var t = t1; t > t0; t--) {
        seg[si(row, t - 1u, d)].y = r;
        r += ld_g(gat(row, t - 1u) + d);
    }
}

// One invocation per (row, channel, column block, chunk), the chunk fastest (the carry layout).
@compute @workgroup_size(WG)
fn chunk_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let c = i % prm.nchunks;
    let rest = i / prm.nchunks;
    let v0 = (rest % prm.nvb) * VB;
    let d = (rest / prm.nvb) % prm.dk;
    let row = rest / (prm.nvb * prm.dk);
    let nv = min(VB, prm.dv - v0);
    var acc: array<f32, VB>;
    for (var j = 0u; j < VB; j++) {
        acc[j] = 0.0;
    }
    let t0 = c * CH;
    let t1 = min(t0 + CH, prm.len);
    for (var t = t0; t < t1; t++) {
        let kw = exp(seg[si(row, t, d)].y) * ld_k(prm.q_off + kat(row, t) + d);
        let vr = prm.v_off + vat(row, t) + v0;
        for (var j = 0u; j < nv; j++) {
            acc[j] += kw * ld_v(vr + j);
        }
    }
    let decay = exp(seg[si(row, t1 - 1u, d)].x);
    let e0 = (row * prm.dk + d) * prm.dv + v0;
    for (var j = 0u; j < nv; j++) {
        carry[(e0 + j) * prm.nchunks + c] = vec2<f32>(decay, acc[j]);
    }
}

// The state entering chunk c at element e of row `row`'s [Dk, Dv] state.
fn h_in(row: u32, e: u32, c: u32) -> f32 {
    let h = h0(row, e);
    if (c == 0u) {
        return h;
    }
    let cv = carry[(row * prm.dk * prm.dv + e) * prm.nchunks + c - 1u];
    return cv.x * h + cv.y;
}

// One invocation per (row, chunk, state element).
@compute @workgroup_size(WG)
fn chunk_in(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let n = prm.dk * prm.dv;
    let rc = i / n;
    hin[i] = h_in(rc / prm.nchunks, i % n, rc % prm.nchunks);
}

// One invocation per (row, t, column block).
@compute @workgroup_size(WG)
fn chunk_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let v0 = (i % prm.nvb) * VB;
    let rest = i / prm.nvb;
    let t = rest % prm.len;
    let row = rest / prm.len;
    let nv = min(VB, prm.dv - v0);
    let c = t / CH;
    let c0 = c * CH;
    let nt = t - c0 + 1u;
    let qrow = prm.q_off + kat(row, t);
    var coef: array<f32, CH>;
    for (var s = 0u; s < CH; s++) {
        coef[s] = 0.0;
    }
    if (prm.gd == 1u) {
        // One gate for every channel: a_ts = exp(g_{s+1} + .. + g_t) (q_t . k_s).
        var lg = 0.0;
        for (var s = nt; s > 0u; s--) {
            let kr = prm.q_off + kat(row, c0 + s - 1u);
            var dot = 0.0;
            for (var d = 0u; d < prm.dk; d++) {
                dot += ld_q(qrow + d) * ld_k(kr + d);
            }
            coef[s - 1u] = exp(lg) * dot;
            lg += ld_g(gat(row, c0 + s - 1u));
        }
    }
    // a_ts over DKB channels at a time, s from t back to the chunk's start (gd = dk > 1).
    for (var d0 = 0u; d0 < select(prm.dk, 0u, prm.gd == 1u); d0 += DKB) {
        let nd = min(DKB, prm.dk - d0);
        var lg: array<f32, DKB>;
        var qd: array<f32, DKB>;
        for (var j = 0u; j < nd; j++) {
            lg[j] = 0.0;
            qd[j] = ld_q(qrow + d0 + j);
        }
        for (var s = nt; s > 0u; s--) {
            let kr = prm.q_off + kat(row, c0 + s - 1u) + d0;
            let gr = gat(row, c0 + s - 1u) + d0;
            var sum = 0.0;
            for (var j = 0u; j < nd; j++) {
                sum += qd[j] * exp(lg[j]) * ld_k(kr + j);
                lg[j] += ld_g(gr + j);
            }
            coef[s - 1u] += sum;
        }
    }
    var acc: array<f32, VB>;
    for (var j = 0u; j < VB; j++) {
        acc[j] = 0.0;
    }
    for (var s = 0u; s < nt; s++) {
        let cf = coef[s];
        let vr = prm.v_off + vat(row, c0 + s) + v0;
        for (var j = 0u; j < nv; j++) {
            acc[j] += cf * ld_v(vr + j);
        }
    }
    // Inter-chunk: the carried-in state, each channel decayed from the chunk's start to t.
    if (c > 0u || (prm.flags & 1u) != 0u) {
        let hrow = (row * prm.nchunks + c) * prm.dk * prm.dv + v0;
        for (var d = 0u; d < prm.dk; d++) {
            let qw = ld_q(qrow + d) * exp(seg[si(row, t, d)].x);
            for (var j = 0u; j < nv; j++) {
                acc[j] += qw * hin[hrow + d * prm.dv + j];
            }
        }
    }
    let orow = prm.out_off + vat(row, t) + v0;
    for (var j = 0u; j < nv; j++) {
        st_out(orow + j, prm.scale * acc[j]);
    }
}

// One invocation per state element (row, d, j).
@compute @workgroup_size(WG)
fn final_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= prm.total) {
        return;
    }
    let n = prm.dk * prm.dv;
    h_last[prm.st_off + i] = h_in(i / n, i % n, prm.nchunks);
}

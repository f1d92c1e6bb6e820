// Parallel associative scan for h_t = a_t h_{t-1} + b_t, h_{-1} = 0, real or complex (Blelloch
// 1990; S5, Smith et al. 2023): elements (a, b) combine as (a_i, b_i) . (a_j, b_j) =
// (a_j a_i, a_j b_i + b_j). x: [R, M] vec4 (a.re, a.im, b.re, b.im) at each level; level 0 has
// M = L, level k+1 holds the chunk totals of level k (chunks of CH positions).
// Up: each invocation scans one chunk serially in place and writes its total (parallel over L
// and rows alike, no workgroup memory or barriers); down: every element of chunk j > 0 is
// prefixed with the resolved total of chunks 0..j-1.
// SSM mode (S4D recurrence): rows are (b, h, n), a = Abar[h, n], b_t = Bbar[h, n] u[b, h, t];
// y[b, h, t] = 2 Re sum_n C[h, n] x[b, h, n, t] + D[h] u[b, h, t].
// u and y are read through strides (hs between heads, ts between tokens: [B, H, L] or [B, L, H]).
// A sequence's first token gets a = 0, b = Abar x0 + Bbar u (x0 its initial state or 0), which
// cuts the scan there (the combine drops everything before it): packed sequences (cu_seqlens)
// and initial states need no change to the scan itself.

override WG: u32 = 256u;
override CH: u32 = 64u; // positions per invocation of chunk_up

struct Params {
    rows: u32,   // scan rows in this pass
    m: u32,      // length of the rows at this level
    total: u32,  // threads or workgroups in use
    flags: u32,  // bit 0: a complex, bit 1: b complex
    in_off: u32, // element offset of the pass's first row in the bound inputs (a, b or u)
    out_off: u32,// same for the outputs (h or y)
    h: u32,      // SSM: heads
    n2: u32,     // SSM: modes per head
    bh0: u32,    // SSM: first (b, h) row of this pass
    stride: u32, // row length L of the inputs and outputs (m is this chunk's length)
    t0: u32,     // first position of this chunk: rows longer than a binding go chunk by chunk
    _p: u32,
    hs: u32,     // SSM: element stride of u and y between heads (L for [B, H, L], 1 for [B, L, H])
    ts: u32,     // SSM: same between tokens (1, or H)
    nseq: u32,   // SSM: packed sequences N (flags bit 3), else 0
    sflags: u32, // SSM: bit 0 packed (seqs bound), bit 1 initial state (state_in bound)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a_re: array<ST>;
@group(0) @binding(2) var<storage, read> a_im: array<ST>;
@group(0) @binding(3) var<storage, read> b_re: array<ST>;
@group(0) @binding(4) var<storage, read> b_im: array<ST>;
@group(0) @binding(5) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> agg: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> h_re: array<OT>;
@group(0) @binding(8) var<storage, read_write> h_im: array<OT>;
@group(0) @binding(9) var<storage, read> modes: array<u32>;
@group(0) @binding(10) var<storage, read> u: array<ST>;
@group(0) @binding(11) var<storage, read> c_re: array<ST>;
@group(0) @binding(12) var<storage, read> c_im: array<ST>;
@group(0) @binding(13) var<storage, read> d: array<ST>;
@group(0) @binding(14) var<storage, read_write> y: array<OT>;
// Per scan row, the last prefix of the previous chunk (flags bit 2: fold it into position 0).
@group(0) @binding(17) var<storage, read_write> carry: array<vec4<f32>>;

const MODE_WORDS: u32 = 7u;
const TWO_PI: f32 = 6.283185307179586;

// e earlier, l later.
fn combine(e: vec4<f32>, l: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(cmul(l.xy, e.xy), cmul(l.xy, e.zw) + l.zw);
}

@compute @workgroup_size(WG)
fn load_ab(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let r = i / p.m;
    let t = i % p.m;
    let j = p.in_off + r * p.stride + p.t0 + t;
    var v = vec4<f32>(ld_a_re(j), 0.0, ld_b_re(j), 0.0);
    if ((p.flags & 1u) != 0u) {
        v.y = ld_a_im(j);
    }
    if ((p.flags & 2u) != 0u) {
        v.w = ld_b_im(j);
    }
    x[i] = carry_in(r, t, v);
}

// Position 0 of a later chunk starts from the previous chunk's last prefix.
fn carry_in(r: u32, t: u32, v: vec4<f32>) -> vec4<f32> {
    if ((p.flags & 4u) != 0u && t == 0u) {
        return combine(carry[r], v);
    }
    return v;
}

// carry[r] = the last prefix of row r of this chunk.
@compute @workgroup_size(WG)
fn save_carry(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let r = wg_index(wg, nwg) * WG + lid;
    if (r < p.rows) {
        carry[r] = x[r * p.m + p.m - 1u];
    }
}

// Index of chunk element i in the outputs.
fn out_index(i: u32) -> u32 {
    return p.out_off + (i / p.m) * p.stride + p.t0 + i % p.m;
}

// One invocation per (row, chunk of CH positions) of a level of length m: the chunk's inclusive
// scan in place, its total to agg[r, chunk]. A loop of at most CH steps, no barriers.
@compute @workgroup_size(WG)
fn chunk_up(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let nch = (p.m + CH - 1u) / CH;
    let t0 = (i % nch) * CH;
    let o = (i / nch) * p.m + t0;
    let n = min(CH, p.m - t0);
    var acc = x[o];
    for (var t = 1u; t < n; t++) {
        acc = combine(acc, x[o + t]);
        x[o + t] = acc;
    }
    agg[i] = acc;
}

// One invocation per element of chunks c >= 1 of a level: x = (resolved total of chunks < c) . x.
@compute @workgroup_size(WG)
fn chunk_down(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let r = i / p.m;
    let c = (i % p.m) / CH;
    if (c == 0u) {
        return;
    }
    let nch = (p.m + CH - 1u) / CH;
    x[i] = combine(agg[r * nch + c - 1u], x[i]);
}

@compute @workgroup_size(WG)
fn store_real(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    st_h_re(out_index(i), x[i].z);
}

@compute @workgroup_size(WG)
fn store_complex(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    st_h_re(out_index(i), x[i].z);
    st_h_im(out_index(i), x[i].w);
}

// Abar of mode `mi` from its table entry: exp(log|Abar|) at the exactly reduced phase.
fn abar(mi: u32) -> vec2<f32> {
    let o = mi * MODE_WORDS;
    let t = f32(bitcast<i32>(modes[o + 3u])) * 2.3283064365386963e-10
        + f32(modes[o + 4u]) * 5.421010862427522e-20;
    let ang = TWO_PI * t;
    return exp(bitcast<f32>(modes[o + 2u])) * vec2<f32>(cos(ang), sin(ang));
}

fn bbar(mi: u32) -> vec2<f32> {
    let o = mi * MODE_WORDS;
    return vec2<f32>(bitcast<f32>(modes[o + 5u]), bitcast<f32>(modes[o + 6u]));
}

// Element of (b, h, t) of u or y (global b, h, t) inside a binding that starts at the pass's
// first row: the pass holds rows bh0.. (whole batch entries when ts != 1), so subtract bh0 L.
fn seq_index(b: u32, hh: u32, t: u32) -> u32 {
    return b * p.h * p.stride + hh * p.hs + t * p.ts - p.bh0 * p.stride;
}

const NONE: u32 = 0xFFFFFFFFu;

// The sequence of token t of batch entry b: b itself, or (packed) seqs[N + 1 + t] (NONE past the
// last offset); .y = 1 when t is the sequence's first token.
fn seq_at(b: u32, t: u32) -> vec2<u32> {
    if ((p.sflags & 1u) == 0u) {
        return vec2<u32>(b, u32(t == 0u));
    }
    let s = seqs[p.nseq + 1u + t];
    if (s == NONE) {
        return vec2<u32>(NONE, 0u);
    }
    return vec2<u32>(s, u32(seqs[s] == t));
}

// One invocation per ((b, h, n) row of the pass, t): x = (Abar, Bbar u_t); a sequence's first
// token x = (0, Abar x0 + Bbar u_t).
@compute @workgroup_size(WG)
fn load_ssm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let r = i / p.m;
    let t = i % p.m;
    let g = p.bh0 + r / p.n2;
    let hh = g % p.h;
    let n = r % p.n2;
    let mi = hh * p.n2 + n;
    let tt = p.t0 + t;
    let sq = seq_at(g / p.h, tt);
    if (sq.x == NONE) {
        x[i] = vec4<f32>(0.0); // past the last offset: cut, read nothing
        return;
    }
    let uu = ld_u(p.in_off + seq_index(g / p.h, hh, tt));
    var v = vec4<f32>(abar(mi), bbar(mi) * uu);
    if (sq.y == 1u) {
        v = vec4<f32>(0.0, 0.0, v.zw);
        if ((p.sflags & 2u) != 0u) {
            v = vec4<f32>(v.xy, v.zw + cmul(abar(mi), state_in[(sq.x * p.h + hh) * p.n2 + n]));
        }
    }
    x[i] = carry_in(r, t, v);
}

// One invocation per ((b, h) row of the pass, t): y = 2 Re sum_n C x + D u (tokens past the
// last offset untouched).
@compute @workgroup_size(WG)
fn out_ssm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let bh = i / p.m;
    let t = i % p.m;
    let g = p.bh0 + bh;
    let hh = g % p.h;
    let tt = p.t0 + t;
    if (seq_at(g / p.h, tt).x == NONE) {
        return;
    }
    var acc = 0.0;
    for (var n = 0u; n < p.n2; n++) {
        let c = vec2<f32>(ld_c_re(hh * p.n2 + n), ld_c_im(hh * p.n2 + n));
        acc += cmul(c, x[(bh * p.n2 + n) * p.m + t].zw).x;
    }
    let e = seq_index(g / p.h, hh, tt);
    st_y(p.out_off + e, 2.0 * acc + ld_d(hh) * ld_u(p.in_off + e));
}

// The final state [N, H, N2] (complex as vec2) of the sequences whose last token is in this
// chunk: one invocation per (sequence, (b, h, n) row of the pass). Unpacked, sequence = b and
// only the row's own b counts. An empty sequence keeps its initial state (written in chunk 0).
@compute @workgroup_size(WG)
fn save_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let r = i % p.rows;
    let g = p.bh0 + r / p.n2;
    let hh = g % p.h;
    let n = r % p.n2;
    var s = g / p.h;
    var start = 0u;
    var end = p.stride;
    if ((p.sflags & 1u) != 0u) {
        s = i / p.rows;
        start = seqs[s];
        end = seqs[s + 1u];
    }
    let o = (s * p.h + hh) * p.n2 + n;
    if (start == end) {
        if (p.t0 == 0u) {
            var x0 = vec2<f32>(0.0);
            if ((p.sflags & 2u) != 0u) {
                x0 = state_in[o];
            }
            state_out[o] = x0;
        }
        return;
    }
    if (end - 1u >= p.t0 && end - 1u < p.t0 + p.m) {
        state_out[o] = x[r * p.m + end - 1u - p.t0].zw;
    }
}

@group(0) @binding(15) var<storage, read> state_in: array<vec2<f32>>;
@group(0) @binding(16) var<storage, read_write> state_out: array<vec2<f32>>;
// Packed sequences: the N + 1 offsets, then each token's sequence (NONE past the last offset).
@group(0) @binding(18) var<storage, read> seqs: array<u32>;

// The recurrent mode, one step, one invocation per (b, h): x_n <- Abar_n x_n + Bbar_n u,
// y = 2 Re sum_n C_n x_n + D u. state: [B, H, N2] complex as vec2.
@compute @workgroup_size(WG)
fn step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let hh = i % p.h;
    let uu = ld_u(i);
    var acc = 0.0;
    for (var n = 0u; n < p.n2; n++) {
        let mi = hh * p.n2 + n;
        let xn = cmul(abar(mi), state_in[i * p.n2 + n]) + bbar(mi) * uu;
        state_out[i * p.n2 + n] = xn;
        let c = vec2<f32>(ld_c_re(mi), ld_c_im(mi));
        acc += cmul(c, xn).x;
    }
    st_y(i, 2.0 * acc + ld_d(hh) * uu);
}

// The S4D convolution mode over real-world batches (issue 14, src/ssm/conv_batch.rs). `gather`
// reads u ([B, H, L] or [B, L, H] through strides; packed sequences: one row per (sequence,
// head)) into zero-padded f32 rows ug: [R, LP]; the causal FFT convolution runs on those rows
// (yc = K * ug + D ug); `finish` adds the initial state's term 2 Re sum_n C_n Abar_n^(t+1) x0_n
// and writes y through the strides (tokens in no sequence are not written); `final_state` reduces
// x_len = Abar^len x0 + sum_j Abar^(len-1-j) Bbar u_j per (row, mode). `widen` copies a T tensor
// into f32 (the kernel K and D for the f32 convolution).

override WG: u32 = 256u;

struct Params {
    h: u32,      // heads
    n2: u32,     // stored modes per head
    len: u32,    // L of u and y
    lp: u32,     // padded length of a gathered row
    rows: u32,   // gathered rows R = N H
    total: u32,  // invocations (gather, widen, finish) or workgroups (final_state) in use
    hs: u32,     // head stride of u and y
    ts: u32,     // token stride of u and y
    y_off: u32,  // element offset of y inside its binding
    nseq: u32,   // N, with packed sequences
    flags: u32,  // 1: packed sequences; 2: an initial state
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> u: array<ST>;
@group(0) @binding(2) var<storage, read_write> ug: array<f32>;
// The N + 1 offsets, then each token's sequence (0xFFFFFFFF past the last offset).
@group(0) @binding(3) var<storage, read> seqs: array<u32>;
@group(0) @binding(4) var<storage, read> modes: array<u32>;
@group(0) @binding(5) var<storage, read> c_re: array<ST>;
@group(0) @binding(6) var<storage, read> c_im: array<ST>;
@group(0) @binding(7) var<storage, read> x0: array<f32>;
@group(0) @binding(8) var<storage, read> yc: array<f32>;
@group(0) @binding(9) var<storage, read_write> y: array<OT>;
@group(0) @binding(10) var<storage, read_write> fin: array<f32>;
@group(0) @binding(11) var<storage, read> src: array<ST>;
@group(0) @binding(12) var<storage, read_write> dst: array<f32>;

// (first token, length, batch entry) of sequence i.
fn seq_of(i: u32) -> vec3<u32> {
    if ((p.flags & 1u) != 0u) {
        return vec3<u32>(seqs[i], seqs[i + 1u] - seqs[i], 0u);
    }
    return vec3<u32>(0u, p.len, i);
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let g = gid(wg, nwg, lid);
    if (g >= p.total) {
        return;
    }
    let r = g / p.lp;
    let t = g % p.lp;
    let s = seq_of(r / p.h);
    var v = 0.0;
    if (t < s.y) {
        v = ld_u(s.z * p.h * p.len + (r % p.h) * p.hs + (s.x + t) * p.ts);
    }
    ug[g] = v;
}

@compute @workgroup_size(WG)
fn widen(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let g = gid(wg, nwg, lid);
    if (g < p.total) {
        dst[g] = ld_src(g);
    }
}

// One invocation per element of y, in memory order.
@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let e = gid(wg, nwg, lid);
    if (e >= p.total) {
        return;
    }
    let hl = p.h * p.len;
    let rem = e % hl;
    var hh = rem % p.h;
    var pos = rem / p.h;
    if (p.ts == 1u) {
        hh = rem / p.len;
        pos = rem % p.len;
    }
    var i = e / hl;
    var t = pos;
    if ((p.flags & 1u) != 0u) {
        i = seqs[p.nseq + 1u + pos];
        if (i == 0xFFFFFFFFu) {
            return; // past the last offset: untouched
        }
        t = pos - seqs[i];
    }
    let r = i * p.h + hh;
    var v = yc[r * p.lp + t];
    if ((p.flags & 2u) != 0u) {
        var acc = 0.0;
        for (var n = 0u; n < p.n2; n++) {
            let m = hh * p.n2 + n;
            let c = vec2<f32>(ld_c_re(m), ld_c_im(m));
            let x = vec2<f32>(x0[(r * p.n2 + n) * 2u], x0[(r * p.n2 + n) * 2u + 1u]);
            acc += cmul(cmul(c, x), abar_pow(m * 7u, t + 1u)).x;
        }
        v += 2.0 * acc;
    }
    st_y(p.y_off + e, v);
}

var<workgroup> part: array<vec2<f32>, WG>;

// One workgroup per (gathered row, mode); each invocation sums every WG-th token (len / WG
// iterations), then a tree sum (WG a power of two).
@compute @workgroup_size(WG)
fn final_state(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return; // uniform across the workgroup
    }
    let r = wid / p.n2;
    let n = wid % p.n2;
    let ln = seq_of(r / p.h).y;
    let o = ((r % p.h) * p.n2 + n) * 7u;
    var acc = vec2<f32>(0.0, 0.0);
    for (var j = lid; j < ln; j += WG) {
        acc += abar_pow(o, ln - 1u - j) * ug[r * p.lp + j];
    }
    part[lid] = acc;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            part[lid] += part[lid + s];
        }
    }
    if (lid == 0u) {
        let bbar = vec2<f32>(bitcast<f32>(modes[o + 5u]), bitcast<f32>(modes[o + 6u]));
        var x = cmul(bbar, part[0]);
        if ((p.flags & 2u) != 0u) {
            let w = (r * p.n2 + n) * 2u;
            x += cmul(abar_pow(o, ln), vec2<f32>(x0[w], x0[w + 1u]));
        }
        fin[(r * p.n2 + n) * 2u] = x.x;
        fin[(r * p.n2 + n) * 2u + 1u] = x.y;
    }
}

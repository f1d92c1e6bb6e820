// Causal FFT convolution y = K * u + D u (S4, arXiv 2111.00396, §3.3) by a four-step FFT
// (Bailey 1990) of n = n1 n2 points held in workgroup memory, two real rows packed in one complex
// row (z = x_a + i x_b), three dispatches per pass:
//   col_fwd:  per column j2, the n1-point FFT over j1 of z[j1 n2 + j2], times W_n^(j2 k1)
//   row_conv: per row pair (k1, n1 - k1), the n2-point FFTs, the real split
//             X_a = (Z_k + conj Z_(n-k)) / 2, X_b = (Z_k - conj Z_(n-k)) / 2i, the product with the
//             kernel spectra, the inverse n2-point FFTs, times W_n^(-j2 k1)
//   col_inv:  per column, the inverse n1-point FFT, y = Re/Im / n + D u for j < L.
// Spectra stay in the four-step's transposed order (X[k1 + n1 k2] at k1 n2 + k2), which the
// inverse undoes, so there is no transpose. Sub-FFTs are radix-4 Stockham (one radix-2 stage for
// odd powers of two) in workgroup memory, read-all / barrier / write-all.
// x: [R, len] real rows (u, or K for the kernel spectra); z: [ceil(R/2), n] complex work rows;
// kf: [H, n] kernel spectra in transposed order; tw: [n], tw[j] = exp(-2 pi i j / n) (f64 on the
// host); d: [H]; y: [R, len]; kraw: [H, len] (K, for the non-finite terms); nf: per row NF_W words.

override WG: u32 = 256u;
override SH: u32 = 1024u; // complex elements per half of workgroup memory

struct Params {
    n: u32,
    n1: u32,
    n2: u32,
    len: u32,    // L
    rows: u32,   // real rows in this pass
    total: u32,  // workgroups in use
    h: u32,      // heads (rows of kf)
    row0: u32,   // global index of the pass's first row (head = (row0 + r) mod h)
    x_off: u32,  // element offset of the pass's first row inside the bound x
    y_off: u32,  // same for y
    g: u32,      // columns per workgroup in col_fwd / col_inv
    flags: u32,  // bit 0: patch non-finite inputs (conv); bit 1: x is K (no masking)
    scale: f32,  // 1 / n
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read_write> z: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> kf: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> tw: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> d: array<ST>;
@group(0) @binding(6) var<storage, read_write> y: array<OT>;
@group(0) @binding(7) var<storage, read> kraw: array<ST>;
@group(0) @binding(8) var<storage, read_write> nf: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read> nfr: array<u32>; // nf, read after col_fwd wrote it

// Two halves of SH: each Stockham stage reads one and writes the other.
var<workgroup> sh: array<vec2<f32>, 2u * SH>;

// Non-finite samples of u (issue 11.2): per row NF_W words, the count, L - (first time) (0 =
// none), then up to NF_MAX times. They are loaded as 0 and their terms K_(t-j) u_j (j <= t) added
// to the finite FFT result, so y_t = sum_(s<=t) K_s u_(t-s) + D u_t keeps its pattern: finite
// before the first, then +-Inf or NaN as the direct sum gives them. Past NF_MAX per row the
// outputs from the first one on are NaN.
const NF_MAX: u32 = 32u;
const NF_W: u32 = 34u;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// w_m^a with m = 2^lm dividing n, w_m = exp(sign 2 pi i / m), a < m.
fn w(a: u32, lm: u32, sign: f32) -> vec2<f32> {
    let t = tw[a << (countTrailingZeros(p.n) - lm)];
    return vec2<f32>(t.x, -sign * t.y);
}

// i sign v
fn rot(v: vec2<f32>, sign: f32) -> vec2<f32> {
    return sign * vec2<f32>(-v.y, v.x);
}

// `cnt` FFTs of length s (a power of two) of sh[src + c s + i]; the caller has written them and
// barriered. Stages ping-pong between the halves (no per-invocation buffer: private arrays with
// dynamic indices are slow on CPU adapters); shifts, not divisions. Returns the result's half.
fn sub_fft(s: u32, cnt: u32, sign: f32, lid: u32, start: u32) -> u32 {
    let ls = countTrailingZeros(s);
    var src = start;
    var lns = 0u;
    while (lns < ls) {
        let lr = select(2u, 1u, ls - lns == 1u);
        let lper = ls - lr;
        let per = 1u << lper;
        let ns = 1u << lns;
        let lm = lns + lr;
        let dst = SH - src;
        for (var b = lid; b < (cnt << lper); b += WG) {
            let base = (b >> lper) << ls;
            let j = b & (per - 1u);
            let k = j & (ns - 1u);
            let i0 = src + base + j;
            let o = dst + base + ((j >> lns) << lm) + k;
            let v0 = sh[i0];
            let w1 = w(k, lm, sign);
            let v1 = cmul(sh[i0 + per], w1);
            if (lr == 1u) {
                sh[o] = v0 + v1;
                sh[o + ns] = v0 - v1;
            } else {
                // w^2, w^3 by products: one table load per butterfly (loads are the cost on
                // CPU adapters), ~1 ulp each.
                let w2 = cmul(w1, w1);
                let v2 = cmul(sh[i0 + 2u * per], w2);
                let v3 = cmul(sh[i0 + 3u * per], cmul(w2, w1));
                let a0 = v0 + v2;
                let a1 = v0 - v2;
                let a2 = v1 + v3;
                let a3 = rot(v1 - v3, sign);
                sh[o] = a0 + a2;
                sh[o + ns] = a1 + a3;
                sh[o + 2u * ns] = a0 - a2;
                sh[o + 3u * ns] = a1 - a3;
            }
        }
        workgroupBarrier();
        src = dst;
        lns = lm;
    }
    return src;
}

// Sample t of real row r of the pass, 0 past L; non-finite as 0 (and recorded) when patching.
fn load_x(r: u32, t: u32) -> f32 {
    if (r >= p.rows || t >= p.len) {
        return 0.0;
    }
    let v = ld_x(p.x_off + r * p.len + t);
    if ((p.flags & 1u) != 0u && !finite(v)) {
        note_nf(r, t);
        return 0.0;
    }
    return v;
}

// Records non-finite sample t of row r in nf (cleared before): col_fwd loads every sample of the
// pass exactly once, so the record needs no pass of its own.
fn note_nf(r: u32, t: u32) {
    let slot = atomicAdd(&nf[r * NF_W], 1u);
    atomicMax(&nf[r * NF_W + 1u], p.len - t);
    if (slot < NF_MAX) {
        atomicStore(&nf[r * NF_W + 2u + slot], t);
    }
}

// log2 of n, n1, n2 and g.
fn logs() -> vec4<u32> {
    return vec4<u32>(countTrailingZeros(p.n), countTrailingZeros(p.n1), countTrailingZeros(p.n2),
                     countTrailingZeros(p.g));
}

// One workgroup per (row pair, g columns): z = W_n^(j2 k1) FFT_n1(x_a + i x_b) over j1.
@compute @workgroup_size(WG)
fn col_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    let live = wid < p.total; // uniform per workgroup; barriers stay in uniform control flow
    let lg = logs();
    let pr = wid >> (lg.z - lg.w);
    let c0 = (wid & ((p.n2 >> lg.w) - 1u)) << lg.w;
    let cnt = p.g << lg.y;
    if (live) {
        for (var e = lid; e < cnt; e += WG) {
            let j = ((e & (p.n1 - 1u)) << lg.z) + c0 + (e >> lg.y);
            sh[e] = vec2<f32>(load_x(2u * pr, j), load_x(2u * pr + 1u, j));
        }
    }
    workgroupBarrier();
    let res = sub_fft(p.n1, p.g, -1.0, lid, 0u);
    if (live) {
        for (var e = lid; e < cnt; e += WG) {
            let k1 = e & (p.n1 - 1u);
            let j2 = c0 + (e >> lg.y);
            z[(pr << lg.x) + (k1 << lg.z) + j2] = cmul(sh[res + e], w(j2 * k1, lg.x, -1.0));
        }
    }
}

// Partner of element e (row `which` of the pair, column k2): where Z_(n-k) sits in a half.
fn partner(e: u32, k1: u32) -> u32 {
    let which = e / p.n2;
    let k2 = e % p.n2;
    if (k1 == 0u) {
        return which * p.n2 + (p.n2 - k2) % p.n2;
    }
    return (1u - which) * p.n2 + p.n2 - 1u - k2;
}

// Workgroup wid of row_conv / row_kspec: (row pair, k1 <= n1 / 2); loads rows k1 and n1 - k1 of
// the pair's z and runs their forward n2-point FFTs. Returns (pair, k1, k1b, result half).
fn load_rows(wid: u32, lid: u32, live: bool) -> vec4<u32> {
    let lg = logs();
    let per = select(p.n1 / 2u + 1u, 1u, p.n1 == 1u);
    let pr = wid / per;
    let k1 = wid % per;
    let k1b = (p.n1 - k1) & (p.n1 - 1u);
    if (live) {
        for (var e = lid; e < 2u * p.n2; e += WG) {
            let row = select(k1, k1b, e >= p.n2);
            sh[e] = z[(pr << lg.x) + (row << lg.z) + (e & (p.n2 - 1u))];
        }
    }
    workgroupBarrier();
    let res = sub_fft(p.n2, 2u, -1.0, lid, 0u);
    return vec4<u32>(pr, k1, k1b, res);
}

// The split of the packed spectra at element e of the half at `half`: (X_a, X_b).
fn split(half: u32, e: u32, k1x: u32) -> vec4<f32> {
    let zk = sh[half + e];
    let zp = sh[half + partner(e, k1x)];
    let zc = vec2<f32>(zp.x, -zp.y);
    let dd = zk - zc;
    return vec4<f32>(0.5 * (zk + zc), 0.5 * vec2<f32>(dd.y, -dd.x));
}

// Kernel spectra: x holds K, pairs of heads (2 pr, 2 pr + 1); kf[h, k1 n2 + k2] = FFT(K_h)[k].
@compute @workgroup_size(WG)
fn row_kspec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    let live = wid < p.total;
    let rk = load_rows(wid, lid, live);
    if (!live) {
        return;
    }
    for (var e = lid; e < 2u * p.n2; e += WG) {
        let k1x = select(rk.y, rk.z, e >= p.n2);
        let pos = k1x * p.n2 + (e & (p.n2 - 1u));
        let xs = split(rk.w, e, k1x);
        let ha = 2u * rk.x;
        kf[ha * p.n + pos] = xs.xy;
        if (ha + 1u < p.h) {
            kf[(ha + 1u) * p.n + pos] = xs.zw;
        }
    }
}

// Convolution: Y = X_a Kf[h_a] + i X_b Kf[h_b], then the inverse n2-point FFTs and the twiddles.
@compute @workgroup_size(WG)
fn row_conv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    let live = wid < p.total;
    let rk = load_rows(wid, lid, live);
    let ha = (p.row0 + 2u * rk.x) % p.h;
    let hb = (ha + 1u) % p.h;
    let other = SH - rk.w;
    if (live) {
        for (var e = lid; e < 2u * p.n2; e += WG) {
            let k1x = select(rk.y, rk.z, e >= p.n2);
            let pos = k1x * p.n2 + (e & (p.n2 - 1u));
            let xs = split(rk.w, e, k1x);
            let ya = cmul(xs.xy, kf[ha * p.n + pos]);
            let yb = cmul(xs.zw, kf[hb * p.n + pos]);
            sh[other + e] = ya + vec2<f32>(-yb.y, yb.x);
        }
    }
    workgroupBarrier();
    let res = sub_fft(p.n2, 2u, 1.0, lid, other);
    let ln = countTrailingZeros(p.n);
    if (live) {
        for (var e = lid; e < 2u * p.n2; e += WG) {
            let k1x = select(rk.y, rk.z, e >= p.n2);
            let j2 = e & (p.n2 - 1u);
            z[rk.x * p.n + k1x * p.n2 + j2] = cmul(sh[res + e], w(j2 * k1x, ln, 1.0));
        }
    }
}

// y_t of real row r (h its head) from the finite FFT part f: + D u_t + the non-finite terms.
fn conv_out(r: u32, t: u32, f: f32) -> f32 {
    let hh = (p.row0 + r) % p.h;
    let ut = ld_x(p.x_off + r * p.len + t);
    var v = p.scale * f + ld_d(hh) * ut;
    let o = r * NF_W;
    let count = nfr[o];
    if (count == 0u) {
        return v;
    }
    let first = p.len - nfr[o + 1u];
    if (t < first) {
        return v;
    }
    if (count > NF_MAX) {
        return bitcast<f32>(0x7fc00000u); // NaN (x - x would be folded to 0)
    }
    for (var c = 0u; c < count; c++) {
        let j = nfr[o + 2u + c];
        if (j <= t) {
            v += ld_kraw(hh * p.len + t - j) * ld_x(p.x_off + r * p.len + j);
        }
    }
    return v;
}

// One workgroup per (row pair, g columns): inverse n1-point FFT over k1, then the outputs.
@compute @workgroup_size(WG)
fn col_inv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    let live = wid < p.total;
    let lg = logs();
    let pr = wid >> (lg.z - lg.w);
    let c0 = (wid & ((p.n2 >> lg.w) - 1u)) << lg.w;
    let cnt = p.g << lg.y;
    if (live) {
        for (var e = lid; e < cnt; e += WG) {
            sh[e] = z[(pr << lg.x) + ((e & (p.n1 - 1u)) << lg.z) + c0 + (e >> lg.y)];
        }
    }
    workgroupBarrier();
    let res = sub_fft(p.n1, p.g, 1.0, lid, 0u);
    if (!live) {
        return;
    }
    for (var e = lid; e < cnt; e += WG) {
        let t = ((e & (p.n1 - 1u)) << lg.z) + c0 + (e >> lg.y);
        if (t < p.len) {
            let ra = 2u * pr;
            let v = sh[res + e];
            st_y(p.y_off + ra * p.len + t, conv_out(ra, t, v.x));
            if (ra + 1u < p.rows) {
                st_y(p.y_off + (ra + 1u) * p.len + t, conv_out(ra + 1u, t, v.y));
            }
        }
    }
}

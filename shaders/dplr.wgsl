// S4 DPLR kernel (Gu et al. 2022, arXiv 2111.00396, Algorithm 1), bilinear discretisation:
// the truncated generating function at the roots of unity w_k = exp(-2 pi i k / n),
//   Khat(w) = C~ (I - Abar w)^-1 Bbar = 2/(1+w) C~ (g(w) - A)^-1 B,  g(w) = (2/dt)(1-w)/(1+w),
// with A = Lambda - P Q^H through Woodbury and Cauchy sums. Written with k'_ab = 2/(1+w) k_ab,
//   k'_ab = sum_n a_n b_n 2 / ((2/dt)(1-w) - (1+w) Lambda_n),
//   Khat = k'_00 - k'_01 k'_10 (1+w) / (2 + (1+w) k'_11),
// which stays finite at w = -1. Then K = iFFT(Khat) (fft.wgsl), real part kept.
// prm: [H, N, 10] f32: Lambda, P, Q, B, C~ as (re, im); dt: [H]; spec: [H, n] vec2; k: [H, L].

override WG: u32 = 256u;

struct Params {
    h: u32,
    nn: u32,     // state size N
    n: u32,      // FFT length (power of two >= L)
    len: u32,    // L
    total: u32,
    scale: f32,
    k_off: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> prm: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> dt: array<f32>;
@group(0) @binding(3) var<storage, read_write> spec: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> res: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> k: array<OT>;

const TWO_PI: f32 = 6.283185307179586;

fn cdiv(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let s = max(abs(b.x), abs(b.y));
    let bs = b / s;
    return vec2<f32>(a.x * bs.x + a.y * bs.y, a.y * bs.x - a.x * bs.y) / (dot(bs, bs) * s);
}

fn conj(a: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x, -a.y);
}

// One invocation per (head, root of unity).
@compute @workgroup_size(WG)
fn cauchy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let hh = i / p.n;
    let kk = i % p.n;
    // The angle reduced to [-pi, pi) before cos/sin: k/n turns, centred, exact.
    var t = f32(kk) / f32(p.n);
    if (2u * kk >= p.n) {
        t = f32(kk) / f32(p.n) - 1.0;
    }
    let w = vec2<f32>(cos(TWO_PI * t), -sin(TWO_PI * t));
    let one_m = vec2<f32>(1.0 - w.x, -w.y);
    let one_p = vec2<f32>(1.0 + w.x, w.y);
    let g = (2.0 / dt[hh]) * one_m;
    var k00 = vec2<f32>(0.0);
    var k01 = vec2<f32>(0.0);
    var k10 = vec2<f32>(0.0);
    var k11 = vec2<f32>(0.0);
    for (var m = 0u; m < p.nn; m++) {
        let o = (hh * p.nn + m) * 5u;
        let lam = prm[o];
        let pp = prm[o + 1u];
        let qc = conj(prm[o + 2u]);
        let b = prm[o + 3u];
        let ct = prm[o + 4u];
        let r = cdiv(vec2<f32>(2.0, 0.0), g - cmul(one_p, lam));
        let ctr = cmul(ct, r);
        let qr = cmul(qc, r);
        k00 += cmul(ctr, b);
        k01 += cmul(ctr, pp);
        k10 += cmul(qr, b);
        k11 += cmul(qr, pp);
    }
    let corr = cdiv(cmul(cmul(k01, k10), one_p), vec2<f32>(2.0, 0.0) + cmul(one_p, k11));
    spec[i] = k00 - corr;
}

// k[h, l] = scale Re(res[h, l]) for l < L.
@compute @workgroup_size(WG)
fn store_real(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let hh = i / p.len;
    let l = i % p.len;
    st_k(p.k_off + i, p.scale * res[hh * p.n + l].x);
}

// S4D convolution kernel (Gu et al. 2022, arXiv 2206.11893): K[h, l] = 2 Re sum_n W[h, n] Abar[h, n]^l
// with W = C Bbar, diagonal complex A in conjugate-pair storage (only one of each pair is stored).
// a_re, a_im, b_re, b_im, c_re, c_im: [H, N2]; dt: [H]; k: [H, L] row-major.
// modes: [H, N2, 7] u32 words per mode: W re, W im, log|Abar| (f32 bits), the phase of Abar in
// turns as a 64-bit two's-complement fixed-point fraction (hi, lo), Bbar re, Bbar im (f32 bits). Abar^l is formed as
// exp(l log|Abar|) (cos, sin)(2 pi frac(l * turns)) with l * turns reduced exactly in integers:
// no repeated products, and cos/sin only ever see angles in [-pi, pi] (abar_pow, in the
// shader prelude of src/pipeline.rs).

override WG: u32 = 256u;
override DISC: u32 = 0u; // 0 ZOH, 1 bilinear

struct Params {
    h: u32,      // heads in this pass
    n2: u32,     // stored modes per head (state size N = 2 N2)
    len: u32,    // L
    total: u32,  // invocations (discretize) or workgroups (vandermonde) in use
    h0: u32,     // first head of this pass
    k_off: u32,  // element offset of the pass's first output inside the bound k range
    l0: u32,     // first position of the pass in head h0 (passes split [H, L] flat, along L too)
    ne: u32,     // outputs in this pass
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a_re: array<ST>;
@group(0) @binding(2) var<storage, read> a_im: array<ST>;
@group(0) @binding(3) var<storage, read> b_re: array<ST>;
@group(0) @binding(4) var<storage, read> b_im: array<ST>;
@group(0) @binding(5) var<storage, read> c_re: array<ST>;
@group(0) @binding(6) var<storage, read> c_im: array<ST>;
@group(0) @binding(7) var<storage, read> dt: array<ST>;
@group(0) @binding(8) var<storage, read_write> modes: array<u32>;
@group(0) @binding(9) var<storage, read_write> k: array<OT>;


fn cdiv(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    // Scaled by the larger component so |b|^2 cannot overflow or underflow.
    let s = max(abs(b.x), abs(b.y));
    let bs = b / s;
    let d = dot(bs, bs);
    return vec2<f32>(a.x * bs.x + a.y * bs.y, a.y * bs.x - a.x * bs.y) / (d * s);
}

// (e^z - 1) / z; the Taylor series near 0 keeps the digits that e^z - 1 would cancel.
fn phi1(z: vec2<f32>) -> vec2<f32> {
    if (dot(z, z) < 0.25) {
        var s = vec2<f32>(1.0, 0.0);
        var t = vec2<f32>(1.0, 0.0);
        for (var j = 2u; j <= 12u; j++) {
            t = cmul(t, z) / f32(j);
            s += t;
        }
        return s;
    }
    let e = exp(z.x);
    return cdiv(vec2<f32>(e * cos(z.y) - 1.0, e * sin(z.y)), z);
}

// log(1 + u) = 2 atanh(u / (2 + u)), series for small u (WGSL has no log1p).
fn log1p_(u: f32) -> f32 {
    if (abs(u) < 0.25) {
        let s = u / (2.0 + u);
        let s2 = s * s;
        var t = s;
        var acc = s;
        for (var j = 3u; j <= 17u; j += 2u) {
            t *= s2;
            acc += t / f32(j);
        }
        return 2.0 * acc;
    }
    return log(1.0 + u);
}

// The top 12 significant bits of x (sign and exponent kept): x - hi12(x) is exact and has at
// most 12 significant bits too, so products of two such parts are exact in f32. Bit masking
// cannot be undone by the shader compiler's algebraic rewrites.
fn hi12(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) & 0xFFFFF000u);
}

// x mod 1 turn as a 64-bit two's-complement fixed-point fraction (hi, lo), exact for any f32
// whose bits lie above 2^-64.
fn to_fixed(x: f32) -> vec2<u32> {
    let f = fract(abs(x));
    let s = f * 4294967296.0;
    let hf = floor(s);
    var hi = u32(hf);
    var lo = u32(floor((s - hf) * 4294967296.0));
    if (x < 0.0) {
        hi = ~hi;
        lo = ~lo + 1u;
        if (lo == 0u) {
            hi += 1u;
        }
    }
    return vec2<u32>(hi, lo);
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.y + b.y;
    return vec2<u32>(a.x + b.x + select(0u, 1u, lo < a.y), lo);
}

// 1/(2 pi) as three exact 12-bit chunks (relative remainder 9e-12).
const C0: f32 = 0.15911865234375;
const C1: f32 = 3.6284327507019043e-05;
const C2: f32 = 6.4192136051133275e-09;

// (x y / 2 pi) mod 1 as 64-bit fixed point, from exact partial products (x, y split in 12-bit
// halves, each 24-bit product split again, times 12-bit chunks of 1/(2 pi)) summed in integers.
fn turns_of_product(x: f32, y: f32) -> vec2<u32> {
    let xs = array<f32, 2>(hi12(x), x - hi12(x));
    let ys = array<f32, 2>(hi12(y), y - hi12(y));
    let cs = array<f32, 3>(C0, C1, C2);
    var acc = vec2<u32>(0u, 0u);
    for (var i = 0u; i < 2u; i++) {
        for (var j = 0u; j < 2u; j++) {
            let q = xs[i] * ys[j];
            let qs = array<f32, 2>(hi12(q), q - hi12(q));
            for (var m = 0u; m < 2u; m++) {
                for (var k = 0u; k < 3u; k++) {
                    acc = add64(acc, to_fixed(qs[m] * cs[k]));
                }
            }
        }
    }
    return acc;
}

// atan2 with one Newton correction: the residual angle of (x, y) rotated by -t0 is small, so its
// first-order value y'/x' fixes a coarse t0 (some drivers' atan2 is only good to ~1e-5).
fn atan2_(y: f32, x: f32) -> f32 {
    let t0 = atan2(y, x);
    let c = cos(t0);
    let s = sin(t0);
    let xr = x * c + y * s;
    let yr = y * c - x * s;
    return select(t0 + yr / xr, t0, xr == 0.0);
}

// One invocation per (head, mode): Abar = exp(dt A) (ZOH) or (1 + dt A/2)/(1 - dt A/2) (bilinear);
// Bbar = dt (e^{dt A} - 1)/(dt A) B (ZOH) or dt B/(1 - dt A/2) (bilinear).
@compute @workgroup_size(WG)
fn discretize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let hh = i / p.n2;
    let a = vec2<f32>(ld_a_re(i), ld_a_im(i));
    let b = vec2<f32>(ld_b_re(i), ld_b_im(i));
    let c = vec2<f32>(ld_c_re(i), ld_c_im(i));
    let d = ld_dt(hh);
    let z = d * a;
    var bbar: vec2<f32>;
    var logmag: f32;
    var theta = 0.0; // bilinear: arg(Abar) in radians
    if (DISC == 0u) {
        bbar = d * cmul(phi1(z), b);
        logmag = z.x;
    } else {
        bbar = d * cdiv(b, vec2<f32>(1.0 - 0.5 * z.x, -0.5 * z.y));
        // |1 +- z/2|^2 = 1 +- Re z + |z|^2/4, through log1p so |Abar| near 1 keeps its digits.
        let q = 0.25 * dot(z, z);
        logmag = 0.5 * (log1p_(z.x + q) - log1p_(q - z.x));
        let hy = 0.5 * z.y;
        theta = atan2_(hy, 1.0 + 0.5 * z.x) + atan2_(hy, 1.0 - 0.5 * z.x);
    }
    let w = cmul(c, bbar);
    // ZOH: the phase step dt Im A is formed exactly (not rounded to f32) before the reduction.
    var f = vec2<u32>(0u, 0u);
    if (DISC == 0u) {
        f = turns_of_product(d, a.y);
    } else {
        f = turns_of_product(theta, 1.0);
    }
    let hi = f.x;
    let lo = f.y;
    let o = i * 7u;
    modes[o + 5u] = bitcast<u32>(bbar.x);
    modes[o + 6u] = bitcast<u32>(bbar.y);
    modes[o] = bitcast<u32>(w.x);
    modes[o + 1u] = bitcast<u32>(w.y);
    modes[o + 2u] = bitcast<u32>(logmag);
    modes[o + 3u] = hi;
    modes[o + 4u] = lo;
}

// Positions per invocation: W Abar^l0 is evaluated exactly once per mode and multiplied by the
// exactly evaluated Abar^r, r < RUN, shared through workgroup memory: two roundings per output
// whatever l, and ~RUN times fewer exp/cos/sin than one evaluation per output.
const RUN: u32 = 8u; // <= WG; the host substitutes its value

var<workgroup> apow: array<vec2<f32>, WG>;

// One workgroup per (head of the pass, tile of WG * RUN positions); one invocation per RUN
// consecutive l. A pass is a flat range of [H, L] (heads h0.. from position l0, ne outputs), so
// a row longer than a storage binding is split along L.
@compute @workgroup_size(WG)
fn vandermonde(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let wid = wg_index(wg, nwg);
    if (wid >= p.total) {
        return; // uniform across the workgroup
    }
    let span = WG * RUN;
    let tiles = (p.len + span - 1u) / span;
    let hh = wid / tiles;
    let l0 = (wid % tiles) * span + lid * RUN;
    // Flat index of l0 inside the pass, and whether any of the RUN positions lies in it.
    let rel0 = i32(hh * p.len + l0) - i32(p.l0);
    let live = l0 < p.len && rel0 + i32(RUN) > 0 && rel0 < i32(p.ne);
    var acc: array<f32, RUN>;
    // #unroll r RUN
    {
        acc[r] = 0.0;
    }
    let base = (p.h0 + hh) * p.n2 * 7u;
    let chunk = WG / RUN; // modes whose Abar^r fill the table at once
    for (var c0 = 0u; c0 < p.n2; c0 += chunk) {
        let cn = min(chunk, p.n2 - c0);
        workgroupBarrier();
        let tn = lid / RUN;
        if (tn < cn) {
            apow[lid] = abar_pow(base + (c0 + tn) * 7u, lid % RUN);
        }
        workgroupBarrier();
        if (live) {
            for (var j = 0u; j < cn; j++) {
                let o = base + (c0 + j) * 7u;
                let w = vec2<f32>(bitcast<f32>(modes[o]), bitcast<f32>(modes[o + 1u]));
                let z = cmul(w, abar_pow(o, l0));
                // #unroll r RUN
                {
                    acc[r] += cmul(z, apow[j * RUN + r]).x;
                }
            }
        }
    }
    if (live) {
        // #unroll r RUN
        {
            let rel = rel0 + i32(r);
            if (l0 + r < p.len && rel >= 0 && rel < i32(p.ne)) {
                st_k(p.k_off + u32(rel), 2.0 * acc[r]);
            }
        }
    }
}

// Batched complex FFT (Stockham autosort, radix 4 and 2: no bit reversal) and the causal FFT
// convolution y = K * u + D u built on it (S4, arXiv 2111.00396, §3.3).
// Spectra: [R, n] complex as vec2<f32> (re, im), n a power of two, row-major.
// x, xi: [R, len] real (or imaginary part) inputs; y, yi: [R, len] outputs; d: [H]; tw: [n] with
// tw[j] = exp(-2 pi i j / n) computed on the host in f64.
// One radix-R pass with span Ns (Govindaraju et al. 2008, "High performance discrete Fourier
// transforms on graphics processors"): thread j loads x[j + r n/R], twiddles by
// w^(r (j mod Ns)) with w = exp(sign 2 pi i / (Ns R)), does a length-R DFT and stores at
// (j / Ns) Ns R + (j mod Ns) + r Ns. Ns runs 1, R1, R1 R2, ... up to n.

override WG: u32 = 256u;
override RADIX: u32 = 4u;

struct Params {
    rows: u32,   // rows in this pass
    len: u32,    // real length L of x / y rows
    n: u32,      // FFT length (power of two)
    total: u32,  // threads in use
    ns: u32,     // Stockham span of this pass
    sign: f32,   // -1 forward, +1 inverse
    scale: f32,  // applied by the store entries (1/n after an inverse transform)
    x_off: u32,  // element offset of the pass's first row inside the bound x / xi
    y_off: u32,  // same for y / yi
    row0: u32,   // global index of the pass's first row (for the head h = row mod H)
    h: u32,      // H, rows of the kernel spectrum
    flags: u32,  // load_real: bit 0 loads non-finite x as 0 (its terms are added by store_conv)
}

// Non-finite inputs of the convolution (issue 11.2). Per row of u, nf holds NF_W words: the
// count of non-finite samples, L - (first such t) (0 = none), then up to NF_MAX of their times.
// By the definition y_t = sum_{s<=t} K_s u_{t-s} + D u_t, outputs before the first one stay
// finite; store_conv adds the non-finite terms K_{t-j} u_j (j <= t) to the finite FFT result,
// so +-Inf, NaN (0 * Inf, Inf - Inf) come out as the direct sum gives them. A row with more than
// NF_MAX of them is NaN from its first one on.
const NF_MAX: u32 = 32u;
const NF_W: u32 = 34u;

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> src: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> tw: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> d: array<ST>;
@group(0) @binding(6) var<storage, read_write> y: array<OT>;
@group(0) @binding(7) var<storage, read> xi: array<ST>;
@group(0) @binding(8) var<storage, read_write> yi: array<OT>;
@group(0) @binding(9) var<storage, read_write> nf: array<atomic<u32>>;

// Zero-padded real rows into complex rows: dst[r, t] = (x[r, t], 0) for t < len, else 0.
@compute @workgroup_size(WG)
fn load_real(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let r = i / p.n;
    let t = i % p.n;
    var v = vec2<f32>(0.0, 0.0);
    if (t < p.len) {
        v.x = ld_x(p.x_off + r * p.len + t);
        if ((p.flags & 1u) != 0u && !finite(v.x)) {
            v.x = 0.0;
        }
    }
    dst[i] = v;
}

// Records the non-finite samples of x: [rows, len] in nf (see NF_MAX).
@compute @workgroup_size(WG)
fn detect_nf(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total || finite(ld_x(p.x_off + i))) {
        return;
    }
    let r = i / p.len;
    let t = i % p.len;
    let slot = atomicAdd(&nf[r * NF_W], 1u);
    atomicMax(&nf[r * NF_W + 1u], p.len - t);
    if (slot < NF_MAX) {
        atomicStore(&nf[r * NF_W + 2u + slot], t);
    }
}

// Complex rows from separate real and imaginary parts (len = n here).
@compute @workgroup_size(WG)
fn load_complex(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    dst[i] = vec2<f32>(ld_x(p.x_off + i), ld_xi(p.x_off + i));
}

// w^a for w = exp(sign 2 pi i / m), from the table: index a n / m (exact, m divides n).
fn twiddle(a: u32, m: u32) -> vec2<f32> {
    let w = tw[a * (p.n / m)];
    return vec2<f32>(w.x, -p.sign * w.y);
}

// i * sign * v
fn rot(v: vec2<f32>) -> vec2<f32> {
    return p.sign * vec2<f32>(-v.y, v.x);
}

@compute @workgroup_size(WG)
fn stockham(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let per_row = p.n / RADIX;
    let r = i / per_row;
    let j = i % per_row;
    let base = r * p.n;
    let k = j % p.ns;
    let m = p.ns * RADIX;
    let out = base + (j / p.ns) * m + k;
    if (RADIX == 2u) {
        let v0 = src[base + j];
        let v1 = cmul(src[base + j + per_row], twiddle(k, m));
        dst[out] = v0 + v1;
        dst[out + p.ns] = v0 - v1;
    } else {
        let v0 = src[base + j];
        let v1 = cmul(src[base + j + per_row], twiddle(k, m));
        let v2 = cmul(src[base + j + 2u * per_row], twiddle(2u * k, m));
        let v3 = cmul(src[base + j + 3u * per_row], twiddle(3u * k, m));
        let a0 = v0 + v2;
        let a1 = v0 - v2;
        let a2 = v1 + v3;
        let a3 = rot(v1 - v3);
        dst[out] = a0 + a2;
        dst[out + p.ns] = a1 + a3;
        dst[out + 2u * p.ns] = a0 - a2;
        dst[out + 3u * p.ns] = a1 - a3;
    }
}

// dst[r, :] *= src[(row0 + r) mod H, :]: the product of the input and kernel spectra.
@compute @workgroup_size(WG)
fn pointwise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let r = i / p.n;
    let t = i % p.n;
    let hh = (p.row0 + r) % p.h;
    dst[i] = cmul(dst[i], src[hh * p.n + t]);
}

// y[r, t] = scale Re(src[r, t]) + D[h] x[r, t] for t < len (the first L samples of the linear
// convolution; n >= 2L so none has wrapped around).
@compute @workgroup_size(WG)
fn store_conv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let r = i / p.len;
    let t = i % p.len;
    let hh = (p.row0 + r) % p.h;
    // D u_t with the raw u_t: a non-finite u_t brings its own D term.
    var v = p.scale * src[r * p.n + t].x + ld_d(hh) * ld_x(p.x_off + i);
    if ((p.flags & 1u) != 0u) {
        let count = atomicLoad(&nf[r * NF_W]);
        let first = p.len - atomicLoad(&nf[r * NF_W + 1u]);
        if (count > 0u && t >= first) {
            if (count > NF_MAX) {
                v = bitcast<f32>(0x7fc00000u); // NaN (x - x would be folded to 0)
            } else {
                for (var c = 0u; c < count; c++) {
                    let j = atomicLoad(&nf[r * NF_W + 2u + c]);
                    if (j <= t) {
                        v += ld_xi(hh * p.len + t - j) * ld_x(p.x_off + r * p.len + j);
                    }
                }
            }
        }
    }
    st_y(p.y_off + i, v);
}

// Complex rows out to separate real and imaginary parts, scaled.
@compute @workgroup_size(WG)
fn store_complex(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = gid(wg, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let v = p.scale * src[i];
    st_y(p.y_off + i, v.x);
    st_yi(p.y_off + i, v.y);
}

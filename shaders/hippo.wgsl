// HiPPO online function approximation (Gu et al. 2020, arXiv 2008.07669), one row = one signal.
// f: [R, L] row-major (this pass's rows); c: [R, L, N] f32, c[r, t, :] = memory after f[r, t].
// abar: [N, N] f32 stored transposed (abar[j * N + i] = Ā[i, j], so neighbouring invocations read
// neighbouring words), bbar: [N] f32 (lti only): c_t = Ā c_{t-1} + bbar f_t.
// nan_at: [1] u32, atomicMin of the global flat index (row0 + r) * L + t of any NaN in f.
// Long series run as several dispatches over chunks of steps, so no single dispatch runs long.
// Entries: legs (one invocation per row, O(N) per step from the structure of LegS's A),
//          lti  (one workgroup per row, dense matvec per step, state in workgroup memory).

override WG: u32 = 64u;     // invocations per workgroup
override NMAX: u32 = 64u;   // state slots per buffer half in workgroup memory (lti), >= N

struct Params {
    rows: u32,
    len: u32,
    n: u32,
    f_off: u32,
    c_off: u32,
    row0: u32,
    total: u32,
    alpha: f32,   // GBT parameter (legs): 0 forward Euler, 1/2 bilinear, 1 backward Euler
    t0: u32,      // this dispatch runs steps [t0, t1); the state before t0 is row t0 - 1 of c
    t1: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> f: array<ST>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> abar: array<f32>;
@group(0) @binding(4) var<storage, read> bbar: array<f32>;
@group(0) @binding(5) var<storage, read_write> nan_at: array<atomic<u32>>;

var<workgroup> st: array<f32, 2 * NMAX>;

// By the bits, so no fast-math assumption can fold it away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Step k = t + 1 uses Δ = 1/k on ċ = A c + B f with A_nk = −u_n u_k (n > k), −(n+1) (n = k),
// B_n = u_n, u_n = √(2n+1). With P_n = Σ_{j<n} u_j c_j the product is (A c)_n = −u_n P_n − (n+1) c_n,
// and (I − αΔA) x = r is a forward substitution carrying Q_n = Σ_{j<n} u_j x_j.
@compute @workgroup_size(WG)
fn legs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wg_index(wg, nwg) * WG + lid;
    if (r >= p.total) {
        return;
    }
    let fb = p.f_off + r * p.len;
    let cb = p.c_off + r * p.len * p.n;
    for (var t = p.t0; t < p.t1; t++) {
        let x = ld_f(fb + t);
        if (is_nan(x)) {
            atomicMin(&nan_at[0], (p.row0 + r) * p.len + t);
        }
        let dt = 1.0 / f32(t + 1u);
        let a = p.alpha * dt;
        let e = (1.0 - p.alpha) * dt;
        var sp = 0.0;
        var sq = 0.0;
        for (var n = 0u; n < p.n; n++) {
            let u = sqrt(f32(2u * n + 1u));
            let d = f32(n + 1u);
            var cn = 0.0;
            if (t > 0u) {
                cn = c[cb + (t - 1u) * p.n + n];
            }
            let rn = cn + e * (-u * sp - d * cn) + dt * u * x;
            let xn = (rn - a * u * sq) / (1.0 + a * d);
            c[cb + t * p.n + n] = xn;
            sp += u * cn;
            sq += u * xn;
        }
    }
}

@compute @workgroup_size(WG)
fn lti(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let r = wg_index(wg, nwg);
    if (r >= p.total) {
        return;
    }
    let fb = p.f_off + r * p.len;
    let cb = p.c_off + r * p.len * p.n;
    for (var i = lid; i < p.n; i += WG) {
        var prev = 0.0;
        if (p.t0 > 0u) {
            prev = c[cb + (p.t0 - 1u) * p.n + i];
        }
        st[(p.t0 % 2u) * NMAX + i] = prev;
    }
    workgroupBarrier();
    for (var t = p.t0; t < p.t1; t++) {
        let x = ld_f(fb + t);
        if (lid == 0u && is_nan(x)) {
            atomicMin(&nan_at[0], (p.row0 + r) * p.len + t);
        }
        let cur = (t % 2u) * NMAX;
        let nxt = NMAX - cur;
        for (var i = lid; i < p.n; i += WG) {
            var acc = bbar[i] * x;
            for (var j = 0u; j < p.n; j++) {
                acc += abar[j * p.n + i] * st[cur + j];
            }
            st[nxt + i] = acc;
            c[cb + t * p.n + i] = acc;
        }
        workgroupBarrier();
    }
}

// One decoding step of linear attention as an RNN (Katharopoulos et al. 2020, eqs. 16-20), with
// a log-scale c per row so FAVOR key features stay stabilised: the true state is e^c (S, z).
// fq, fk: [R, F] f32 features of q_t and k_t (fk stabilised by its own log-scale ck: [R]);
// v: [R, Dv] storage dtype; S: [R, F, Dv], z: [R, F], c: [R] f32 state; o: [R, Dv].
// step_update: c' = max(c, ck); S = e^(c - c') S + e^(ck - c') fk v^T; z = e^(c - c') z + e^(ck - c') fk.
// step_output: o = fq.S / (fq.z + eps) (0 when that is exactly 0; numerator alone without the
//              denominator), then c = c'.

override WG: u32 = 64u;   // a power of two

struct Params {
    rows: u32,
    f: u32,
    dv: u32,
    flags: u32,   // bit 0: denominator
    eps: f32,
    v_off: u32,
    o_off: u32,
    s_off: u32,
    z_off: u32,
    c_off: u32,
    total: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> fq: array<f32>;
@group(0) @binding(2) var<storage, read> fk: array<f32>;
@group(0) @binding(3) var<storage, read> ck: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<ST>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> z: array<f32>;
@group(0) @binding(7) var<storage, read_write> c: array<f32>;
@group(0) @binding(8) var<storage, read_write> o: array<OT>;

var<workgroup> red: array<f32, WG>;

// One invocation per (row, state entry).
@compute @workgroup_size(WG)
fn step_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let gid = wg_index(wg, nwg) * WG + lid;
    if (gid >= p.total) {
        return;
    }
    let kv = p.f * p.dv;
    let w = kv + p.f;
    let r = gid / w;
    let e = gid % w;
    let c0 = c[p.c_off + r];
    let c1 = fmax(c0, ck[r]);
    let a = exp(c0 - c1);
    let b = exp(ck[r] - c1);
    if (e < kv) {
        let i = e / p.dv;
        let d = e % p.dv;
        let at = p.s_off + r * kv + e;
        s[at] = a * s[at] + b * fk[r * p.f + i] * ld_v(p.v_off + r * p.dv + d);
    } else {
        let i = e - kv;
        let at = p.z_off + r * p.f + i;
        z[at] = a * z[at] + b * fk[r * p.f + i];
    }
}

// One workgroup per row.
@compute @workgroup_size(WG)
fn step_output(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let r = wg_index(wg, nwg);
    if (r >= p.total) {
        return;
    }
    let kv = p.f * p.dv;
    var part = 0.0;
    for (var i = lid; i < p.f; i += WG) {
        part += fq[r * p.f + i] * z[p.z_off + r * p.f + i];
    }
    red[lid] = part;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            red[lid] += red[lid + h];
        }
        workgroupBarrier();
    }
    let den = red[0] + p.eps;
    for (var d = lid; d < p.dv; d += WG) {
        var num = 0.0;
        for (var i = 0u; i < p.f; i++) {
            num += fq[r * p.f + i] * s[p.s_off + r * kv + i * p.dv + d];
        }
        var out = num;
        if ((p.flags & 1u) != 0u) {
            out = select(num / den, 0.0, den == 0.0);
        }
        st_o(p.o_off + r * p.dv + d, out);
    }
    if (lid == 0u) {
        c[p.c_off + r] = fmax(c[p.c_off + r], ck[r]);
    }
}

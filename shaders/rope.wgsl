// Rotary position embedding (Su et al. 2021, RoFormer, eq. 34): each pair (a, b) of a row of x at
// position m turns by the angle m·θ_i: (a cos − b sin, a sin + b cos), times mscale (YaRN's
// attention temperature; 1 otherwise).
// x, o: [R, L, D] row-major, R = rows (batch x heads) in this pass, or [R, L, H, D] (R = batch
// entries) with hin = H; pairs (2i, 2i+1) when
// LAYOUT = 0 (interleaved), (i, i + D/2) when LAYOUT = 1 (GPT-NeoX half split).
// pos: [L] u32 integer positions. freq: [D/2] pairs of u32 (hi, lo): θ_i / 2π in turns, as a
// 64-bit fixed-point fraction (integer turns dropped, they do not change the angle).
// The angle is reduced exactly in integer arithmetic, m·frac mod 1, so cos and sin see an f32
// angle in [−π, π) accurate to ~2^-24 turns for every u32 position.

override WG: u32 = 256u;
override LAYOUT: u32 = 0u;

struct Params {
    rows: u32,
    len: u32,
    half: u32,    // D / 2
    x_off: u32,
    o_off: u32,
    total: u32,   // rows * len * half
    mscale: f32,
    hin: u32,     // heads between a token's positions: 1 for [.., L, D], H for [B, L, H, D]
    seqs: u32,    // 1: packed sequences; seq[l] picks the frequency row, u32::MAX = no sequence
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> freq: array<u32>;
@group(0) @binding(4) var<storage, read_write> o: array<OT>;
@group(0) @binding(5) var<storage, read> seq: array<u32>;   // [L] sequence of each position

// The full 64-bit product a·b as (lo, hi), from 16-bit limbs.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (mid << 16u) | (p00 & 0xffffu);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// m · θ_i in radians, reduced to [−π, π).
fn angle(m: u32, i: u32, f0: u32) -> f32 {
    let fh = freq[f0 + 2u * i];
    let fl = freq[f0 + 2u * i + 1u];
    let w = mul_wide(m, fl);
    let hi = m * fh + w.y;    // mod 2^32: whole turns fall off
    // Signed reading of the top word centres the fraction on 0.
    let turns = f32(bitcast<i32>(hi)) * 2.3283064365386963e-10 + f32(w.x) * 5.421010862427522e-20;
    return turns * 6.283185307179586;
}

@compute @workgroup_size(WG)
fn rotate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let g = (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
    if (g >= p.total) {
        return;
    }
    let i = g % p.half;
    let t = g / p.half;
    let l = (t / p.hin) % p.len;
    let d = 2u * p.half;
    var f0 = 0u;   // this position's frequency row (one per packed sequence)
    if (p.seqs != 0u) {
        let sq = seq[l];
        if (sq == 0xffffffffu) {
            return;   // past the last packed offset: output untouched
        }
        f0 = sq * d;
    }
    let row = t * d;   // (r * len + l) * D
    var ia = 2u * i;
    var ib = 2u * i + 1u;
    if (LAYOUT == 1u) {
        ia = i;
        ib = i + p.half;
    }
    let th = angle(pos[l], i, f0);
    let c = cos(th);
    let s = sin(th);
    let a = ld_x(p.x_off + row + ia);
    let b = ld_x(p.x_off + row + ib);
    st_o(p.o_off + row + ia, (a * c - b * s) * p.mscale);
    st_o(p.o_off + row + ib, (a * s + b * c) * p.mscale);
}

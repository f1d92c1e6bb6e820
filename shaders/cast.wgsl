// f32 -> f16 packing for adapters without SHADER_F16: halves [start, start + n) of dst (u32 words,
// two f16 each, low half first) take src[0 .. n); the other half of a boundary word is kept
// bit for bit.
// src: [n] f32; dst: [words] u32.

override WG: u32 = 256u;

struct Params {
    start: u32,
    n: u32,
    first_word: u32,
    words: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn pack_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let g = (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
    if (g >= p.words) {
        return;
    }
    let w = p.first_word + g;
    let old = dst[w];
    var pair = unpack2x16float(old);
    // A NaN written over a NaN keeps the old bits: staging read from the tensor (ops that leave
    // some of it untouched) gives its elements back bit for bit, NaN payloads too.
    var keep = 0u;
    for (var h = 0u; h < 2u; h++) {
        let idx = 2u * w + h;
        if (idx >= p.start && idx < p.start + p.n) {
            let x = src[idx - p.start];
            let old_nan = ((old >> (16u * h)) & 0x7FFFu) > 0x7C00u;
            if (old_nan && (bitcast<u32>(x) & 0x7FFFFFFFu) > 0x7F800000u) {
                keep |= 0xFFFFu << (16u * h);
            }
            pair[h] = x;
        } else {
            keep |= 0xFFFFu << (16u * h);
        }
    }
    dst[w] = (pack2x16float(pair) & ~keep) | (old & keep);
}

// The inverse, to start a staged output from the tensor's values (ops that leave some elements
// untouched): unpacked[i] = f32(half start + i of packed), i < n.
@group(0) @binding(3) var<storage, read> packed: array<u32>;
@group(0) @binding(4) var<storage, read_write> unpacked: array<f32>;

@compute @workgroup_size(WG)
fn unpack_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let g = (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
    if (g >= p.n) {
        return;
    }
    let idx = p.start + g;
    unpacked[g] = unpack2x16float(packed[idx / 2u])[idx % 2u];
}

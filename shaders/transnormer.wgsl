// TransNormer's output norms (Qin et al. 2022), over the last dim of x: [N, Dv] f32 -> o: [N, Dv].
//   NORM 0 SimpleRMSNorm: x / (|x|_2 Dv^(-1/2) + eps)
//   NORM 1 RMSNorm:       gain * x / (|x|_2 Dv^(-1/2) + eps) + bias
//   NORM 2 LayerNorm:     gain * (x - mean) / sqrt(var + eps) + bias   (biased variance)
// SimpleRMSNorm runs as RMSNorm with gain 1 and bias 0 (exact). One invocation per row; N = rows in
// this pass.

override NORM: u32 = 0u;
override WG: u32 = 256u;

struct Params {
    n: u32,
    dv: u32,
    eps: f32,
    o_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<OT>;

@compute @workgroup_size(WG)
fn norm_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
    if (row >= p.n) {
        return;
    }
    let xb = row * p.dv;
    let ob = p.o_off + row * p.dv;
    let n = f32(p.dv);
    if (NORM == 2u) {
        var mean = 0.0;
        for (var d = 0u; d < p.dv; d++) {
            mean += x[xb + d];
        }
        mean /= n;
        var var_ = 0.0;
        for (var d = 0u; d < p.dv; d++) {
            let c = x[xb + d] - mean;
            var_ += c * c;
        }
        let inv = 1.0 / sqrt(var_ / n + p.eps);
        for (var d = 0u; d < p.dv; d++) {
            st_o(ob + d, gain[d] * (x[xb + d] - mean) * inv + bias[d]);
        }
        return;
    }
    // |x|_2 with a rescale so squares of large numerators cannot overflow.
    var big = 0.0;
    var nan = false;
    for (var d = 0u; d < p.dv; d++) {
        let v = x[xb + d];
        big = max(big, abs(v));
        nan = nan || v != v;
    }
    var ss = 0.0;
    if (big > 0.0) {
        for (var d = 0u; d < p.dv; d++) {
            let t = x[xb + d] / big;
            ss += t * t;
        }
    }
    var rms = big * sqrt(ss / n);
    // An Inf entry (and no NaN): |x|_2 = Inf as in the definition, so finite entries give 0 and
    // only the Inf ones NaN (the rescale would make every entry NaN through Inf/Inf).
    if (big > 3.4028235e38 && !nan) {
        rms = big;
    }
    for (var d = 0u; d < p.dv; d++) {
        st_o(ob + d, gain[d] * (x[xb + d] / (rms + p.eps)) + bias[d]);
    }
}

var<workgroup> red: array<f32, WG>;

// Tree reduction over the workgroup (sum, or max when mx); every invocation gets the result.
fn reduce(lid: u32, v: f32, mx: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), mx);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// As norm_rows with one workgroup per row, each invocation a strided part of Dv: rows past
// NORM_ROW_DV (host) looped Dv three times in one invocation, past lavapipe's 65 535 iterations.
@compute @workgroup_size(WG)
fn norm_rows_wide(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + nwg.x * (wg.y + nwg.y * wg.z);
    if (row >= p.n) {
        return;
    }
    let xb = row * p.dv;
    let ob = p.o_off + row * p.dv;
    let n = f32(p.dv);
    if (NORM == 2u) {
        var part = 0.0;
        for (var d = lid; d < p.dv; d += WG) {
            part += x[xb + d];
        }
        let mean = reduce(lid, part, false) / n;
        part = 0.0;
        for (var d = lid; d < p.dv; d += WG) {
            let c = x[xb + d] - mean;
            part += c * c;
        }
        let inv = 1.0 / sqrt(reduce(lid, part, false) / n + p.eps);
        for (var d = lid; d < p.dv; d += WG) {
            st_o(ob + d, gain[d] * (x[xb + d] - mean) * inv + bias[d]);
        }
        return;
    }
    var big = 0.0;
    var nan = 0.0;
    for (var d = lid; d < p.dv; d += WG) {
        let v = x[xb + d];
        big = max(big, abs(v));
        nan = select(nan, 1.0, v != v);
    }
    big = reduce(lid, big, true);
    let any_nan = reduce(lid, nan, true) > 0.0;
    var ss = 0.0;
    if (big > 0.0) {
        for (var d = lid; d < p.dv; d += WG) {
            let t = x[xb + d] / big;
            ss += t * t;
        }
    }
    var rms = big * sqrt(reduce(lid, ss, false) / n);
    if (big > 3.4028235e38 && !any_nan) {
        rms = big;
    }
    for (var d = lid; d < p.dv; d += WG) {
        st_o(ob + d, gain[d] * (x[xb + d] / (rms + p.eps)) + bias[d]);
    }
}

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

// Embedding lookup: out[n, c] = table[ids[n], c] for the ids that fall in this pass's table rows.
// (The output is not named x: the generated st_x(i, x) would shadow it.)
// table: [V, D] row-major, bound rows [v0, v0 + nv); ids: [N] u32 (validated < V on the host);
// out: [N, D], bound rows [n0, n0 + nn). One invocation per output element; a pass whose table
// slice does not hold ids[n] leaves out[n, ..] to the pass that does.

override WG: u32 = 256u;

struct Params {
    d: u32,
    v0: u32,
    nv: u32,
    t_off: u32,
    x_off: u32,
    i_off: u32,
    total: u32,   // nn * d
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<ST>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<OT>;

@compute @workgroup_size(WG)
fn lookup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let g = (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
    if (g >= p.total) {
        return;
    }
    let n = g / p.d;
    let c = g % p.d;
    let id = ids[p.i_off + n];
    // Unsigned wrap-around makes ids below v0 fail the test too.
    if (id - p.v0 < p.nv) {
        st_out(p.x_off + g, ld_table(p.t_off + (id - p.v0) * p.d + c));
    }
}

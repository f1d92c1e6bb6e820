#!/usr/bin/env python3
"""JAX-CPU timings of the workloads W1, W2, W3 (issue 10), for a side-by-side comparison with
longseq in one run. Not a dependency of longseq: scripts/bench-vs-jax makes a throw-away venv.

W1: non-causal elu+1 linear attention, B*H = 16, L = 4096, D = 64, f32, eps = 1e-6.
W2: W1 causal, chunked form with chunk 64 (the form fla and Lightning use).
W3: S4D kernel (ZOH, Vandermonde) + causal FFT convolution (rfft with 2L padding), H = 256,
    N = 64 (32 conjugate pairs), L = 16384, A_n = -1/2 + i*pi*n, B = 1, C ~ CN(0, 1),
    dt log-uniform in [1e-3, 1e-1], D = 1.
W4: Mamba-2 SSD, b = 1, l = 4096, h = 24, p = 64, n = 64, A in [-1, -0.001]: the chunked (block)
    form with chunks of 64 (intra-chunk decay-masked C B^T X, chunk states, a scan of the states
    over chunks, inter-chunk output).
W5: gated linear attention, B*H = 8, L = 4096, Dk = Dv = 64, g in [-0.1, -0.001]: the chunked form
    with chunks of 64 (q exp(G), k exp(-G) inside a chunk: safe for these gates only).
W6: Mamba selective scan (S6, mamba's selective_scan_ref), B = 1, D = 1536, N = 16, L = 4096,
    delta_softplus with delta_bias, D skip, no z: Delta = softplus(delta + bias),
    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t, y_t = C_t h_t + D u_t, as jax.lax.scan over L
    (selective_scan_ref's loop; lax.associative_scan was 40x slower on the CPU).
--check compares W4, W5 and W6 with their step-by-step recurrences (numpy, float64) at a small size.
Prints one line per workload: `W1 jax <median ms> ms (min .., max .., n runs)`.
Usage: jax_workloads.py [--l L] [--runs N] [--only W1,W2,W3,W4,W5,W6] [--check]
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def phi(x):
    return jax.nn.elu(x) + 1.0


@jax.jit
def w1(q, k, v):
    fq, fk = phi(q), phi(k)
    s = jnp.einsum("hld,hle->hde", fk, v)
    z = fk.sum(axis=1)
    num = jnp.einsum("hld,hde->hle", fq, s)
    den = jnp.einsum("hld,hd->hl", fq, z) + 1e-6
    return num / den[..., None]


def make_w2(chunk):
    @jax.jit
    def w2(q, k, v):
        h, l, d = q.shape
        n = l // chunk
        fq = phi(q).reshape(h, n, chunk, d)
        fk = phi(k).reshape(h, n, chunk, d)
        vv = v.reshape(h, n, chunk, v.shape[-1])
        mask = jnp.tril(jnp.ones((chunk, chunk), q.dtype))
        kv = jnp.einsum("hncd,hnce->hnde", fk, vv)
        kz = fk.sum(axis=2)
        # exclusive prefix over chunks
        s = jnp.cumsum(kv, axis=1) - kv
        z = jnp.cumsum(kz, axis=1) - kz
        a = jnp.einsum("hncd,hnmd->hncm", fq, fk) * mask
        num = jnp.einsum("hncm,hnme->hnce", a, vv) + jnp.einsum("hncd,hnde->hnce", fq, s)
        den = a.sum(-1) + jnp.einsum("hncd,hnd->hnc", fq, z) + 1e-6
        return (num / den[..., None]).reshape(h, l, -1)

    return w2


@jax.jit
def w3(a_re, a_im, c_re, c_im, log_dt, u):
    l = u.shape[-1]
    dt = jnp.exp(log_dt)[:, None]
    a = a_re + 1j * a_im
    c = c_re + 1j * c_im
    dta = dt * a
    bbar = (jnp.exp(dta) - 1.0) / a  # B = 1
    cb = c * bbar
    pos = jnp.arange(l)
    vand = jnp.exp(dta[:, :, None] * pos)  # [H, N/2, L]
    kern = 2.0 * jnp.real(jnp.einsum("hn,hnl->hl", cb, vand))
    n = 2 * l
    y = jnp.fft.irfft(jnp.fft.rfft(u, n) * jnp.fft.rfft(kern, n), n)[..., :l]
    return y + u  # D = 1


def make_w4(chunk):
    @jax.jit
    def w4(x, a, b, c):
        bs, l, h, p = x.shape
        n, nc = b.shape[-1], l // chunk
        x = x.reshape(bs, nc, chunk, h, p)
        b = b.reshape(bs, nc, chunk, h, n)
        c = c.reshape(bs, nc, chunk, h, n)
        a = jnp.moveaxis(a.reshape(bs, nc, chunk, h), 3, 1)  # [b, h, c, t]
        cum = jnp.cumsum(a, axis=-1)
        # decay from s to t (s <= t) inside a chunk, zero above the diagonal
        diff = cum[..., :, None] - cum[..., None, :]
        causal = jnp.tril(jnp.ones((chunk, chunk), bool))
        decay = jnp.where(causal, jnp.exp(jnp.where(causal, diff, 0.0)), 0.0)
        scores = jnp.einsum("bcthn,bcshn->bhcts", c, b) * decay
        y_intra = jnp.einsum("bhcts,bcshp->bcthp", scores, x)
        to_end = jnp.exp(cum[..., -1:] - cum)  # [b, h, c, t]
        states = jnp.einsum("bcthn,bhct,bcthp->bchnp", b, to_end, x)
        chunk_decay = jnp.exp(cum[..., -1])  # [b, h, c]

        def step(carry, inp):
            st, dec = inp
            return dec[..., None, None] * carry + st, carry

        _, h_in = jax.lax.scan(step, jnp.zeros_like(states[:, 0]),
                               (jnp.moveaxis(states, 1, 0), jnp.moveaxis(chunk_decay, 2, 0)))
        h_in = jnp.moveaxis(h_in, 0, 1)  # [b, c, h, n, p], the state entering each chunk
        y_inter = jnp.einsum("bcthn,bchnp,bhct->bcthp", c, h_in, jnp.exp(cum))
        return (y_intra + y_inter).reshape(bs, l, h, p)

    return w4


def make_w5(chunk):
    @jax.jit
    def w5(q, k, v, g):
        r, l, dk = q.shape
        dv, nc = v.shape[-1], l // chunk
        q, k, g = (t.reshape(r, nc, chunk, dk) for t in (q, k, g))
        v = v.reshape(r, nc, chunk, dv)
        cum = jnp.cumsum(g, axis=2)
        qg, kg = q * jnp.exp(cum), k * jnp.exp(-cum)
        causal = jnp.tril(jnp.ones((chunk, chunk), q.dtype))
        o_intra = jnp.einsum("rcts,rcse->rcte", jnp.einsum("rctd,rcsd->rcts", qg, kg) * causal, v)
        kd = k * jnp.exp(cum[:, :, -1:] - cum)
        states = jnp.einsum("rcsd,rcse->rcde", kd, v)
        chunk_decay = jnp.exp(cum[:, :, -1])  # [r, c, dk]

        def step(carry, inp):
            st, dec = inp
            return dec[..., None] * carry + st, carry

        _, s_in = jax.lax.scan(step, jnp.zeros_like(states[:, 0]),
                               (jnp.moveaxis(states, 1, 0), jnp.moveaxis(chunk_decay, 1, 0)))
        o_inter = jnp.einsum("rctd,crde->rcte", qg, s_in)
        return ((o_intra + o_inter) / jnp.sqrt(dk)).reshape(r, l, dv)

    return w5


@jax.jit
def w6(u, delta, a, b, c, d, bias):
    # u, delta: [B, D, L]; a: [D, N]; b, c: [B, N, L]; d, bias: [D] (selective_scan_ref's names).
    # lax.scan over L: jax.lax.associative_scan over the (exp(dt A), dt B u) pairs was 40x slower
    # here (59.6 s vs 1.46 s, it materialises [B, L, D, N] per level).
    dt = jax.nn.softplus(delta + bias[:, None])

    def step(h, inp):
        dt_t, u_t, b_t, c_t = inp  # [B, D], [B, D], [B, N], [B, N]
        h = jnp.exp(dt_t[..., None] * a) * h + (dt_t * u_t)[..., None] * b_t[:, None, :]
        return h, jnp.einsum("bdn,bn->bd", h, c_t)

    xs = tuple(jnp.moveaxis(t, 2, 0) for t in (dt, u, b, c))
    _, ys = jax.lax.scan(step, jnp.zeros(u.shape[:2] + a.shape[1:], u.dtype), xs)
    return jnp.moveaxis(ys, 0, 2) + d[:, None] * u


def w6_inputs(rng, l, bs=1, dim=1536, n=16):
    u, delta = rng.uniform(-1, 1, (bs, dim, l)), rng.uniform(-3, 1, (bs, dim, l))
    a = -rng.uniform(0.5, 16, (dim, n))
    b, c = rng.uniform(-1, 1, (bs, n, l)), rng.uniform(-1, 1, (bs, n, l))
    return u, delta, a, b, c, rng.uniform(-1, 1, dim), rng.uniform(-0.5, 0.5, dim)


def w4_inputs(rng, l, h=24, p=64, n=64):
    x = rng.uniform(-1, 1, (1, l, h, p))
    a = rng.uniform(-1, -0.001, (1, l, h))
    b, c = (rng.uniform(-1, 1, (1, l, h, n)) for _ in range(2))
    return x, a, b, c


def w5_inputs(rng, l, r=8, dk=64, dv=64):
    q, k = (rng.uniform(-1, 1, (r, l, dk)) for _ in range(2))
    return q, k, rng.uniform(-1, 1, (r, l, dv)), rng.uniform(-0.1, -0.001, (r, l, dk))


def check(rng):
    x, a, b, c = w4_inputs(rng, 256, h=3, p=5, n=4)
    st, ys = np.zeros((3, 4, 5)), []
    for t in range(256):
        st = np.exp(a[0, t])[:, None, None] * st + b[0, t][:, :, None] * x[0, t][:, None, :]
        ys.append(np.einsum("hn,hnp->hp", c[0, t], st))
    got = np.asarray(make_w4(64)(*(jnp.asarray(z, jnp.float32) for z in (x, a, b, c))))
    print(f"W4 check: max rel err {np.abs(got[0] - np.stack(ys)).max() / np.abs(ys).max():.2e}")
    q, k, v, g = w5_inputs(rng, 256, r=2, dk=6, dv=5)
    st, os_ = np.zeros((2, 6, 5)), []
    for t in range(256):
        st = np.exp(g[:, t])[:, :, None] * st + k[:, t][:, :, None] * v[:, t][:, None, :]
        os_.append(np.einsum("rd,rde->re", q[:, t], st) / np.sqrt(6))
    want = np.stack(os_, axis=1)
    got = np.asarray(make_w5(64)(*(jnp.asarray(z, jnp.float32) for z in (q, k, v, g))))
    print(f"W5 check: max rel err {np.abs(got - want).max() / np.abs(want).max():.2e}")
    u, delta, a, b, c, d, bias = w6_inputs(rng, 200, dim=7, n=5)
    dt = np.log1p(np.exp(delta + bias[:, None]))
    st, ys = np.zeros((7, 5)), []
    for t in range(200):
        st = np.exp(dt[0, :, t][:, None] * a) * st + (dt[0, :, t] * u[0, :, t])[:, None] * b[0, :, t]
        ys.append(st @ c[0, :, t] + d * u[0, :, t])
    want = np.stack(ys, axis=1)
    got = np.asarray(w6(*(jnp.asarray(z, jnp.float32) for z in (u, delta, a, b, c, d, bias))))[0]
    print(f"W6 check: max rel err {np.abs(got - want).max() / np.abs(want).max():.2e}")


def timeit(f, args, runs):
    jax.block_until_ready(f(*args))  # compile + warm
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append((time.perf_counter() - t) * 1e3)
    return ts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--l", type=int, default=4096, help="L for W1 and W2")
    p.add_argument("--l3", type=int, default=16384, help="L for W3")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--only", default="W1,W2,W3,W4,W5,W6")
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    if a.check:
        check(rng)
    only = a.only.split(",")
    h, d = 16, 64
    q, k, v = (jnp.asarray(rng.uniform(-1, 1, (h, a.l, d)), jnp.float32) for _ in range(3))
    rows = []
    if "W1" in only:
        rows.append(("W1", timeit(w1, (q, k, v), a.runs)))
    if "W2" in only:
        rows.append(("W2", timeit(make_w2(64), (q, k, v), a.runs)))
    if "W3" in only:
        hh, n2 = 256, 32
        a_re = jnp.full((hh, n2), -0.5, jnp.float32)
        a_im = jnp.asarray(np.tile(np.pi * np.arange(n2), (hh, 1)), jnp.float32)
        c = rng.standard_normal((hh, n2, 2)) * np.sqrt(0.5)
        log_dt = rng.uniform(np.log(1e-3), np.log(1e-1), hh)
        u = rng.standard_normal((hh, a.l3))
        args = [jnp.asarray(x, jnp.float32) for x in (c[..., 0], c[..., 1], log_dt, u)]
        rows.append(("W3", timeit(w3, (a_re, a_im, *args), max(3, a.runs // 2))))
    if "W4" in only:
        args = [jnp.asarray(z, jnp.float32) for z in w4_inputs(rng, a.l)]
        rows.append(("W4", timeit(make_w4(64), args, a.runs)))
    if "W5" in only:
        args = [jnp.asarray(z, jnp.float32) for z in w5_inputs(rng, a.l)]
        rows.append(("W5", timeit(make_w5(64), args, a.runs)))
    if "W6" in only:
        args = [jnp.asarray(z, jnp.float32) for z in w6_inputs(rng, a.l)]
        rows.append(("W6", timeit(w6, args, a.runs)))
    for name, ts in rows:
        print(f"{name} jax {statistics.median(ts):.1f} ms (min {min(ts):.1f}, max {max(ts):.1f}, "
              f"{len(ts)} runs)")


if __name__ == "__main__":
    main()

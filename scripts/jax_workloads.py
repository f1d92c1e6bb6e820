#!/usr/bin/env python3
"""JAX-CPU timings of the workloads W1, W2, W3 (issue 10), for a side-by-side comparison with
longseq in one run. Not a dependency of longseq: scripts/bench-vs-jax makes a throw-away venv.

W1: non-causal elu+1 linear attention, B*H = 16, L = 4096, D = 64, f32, eps = 1e-6.
W2: W1 causal, chunked form with chunk 64 (the form fla and Lightning use).
W3: S4D kernel (ZOH, Vandermonde) + causal FFT convolution (rfft with 2L padding), H = 256,
    N = 64 (32 conjugate pairs), L = 16384, A_n = -1/2 + i*pi*n, B = 1, C ~ CN(0, 1),
    dt log-uniform in [1e-3, 1e-1], D = 1.
Prints one line per workload: `W1 jax <median ms> ms (min .., max .., n runs)`.
Usage: jax_workloads.py [--l L] [--runs N] [--only W1,W2,W3]
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
    p.add_argument("--only", default="W1,W2,W3")
    a = p.parse_args()
    rng = np.random.default_rng(0)
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
    for name, ts in rows:
        print(f"{name} jax {statistics.median(ts):.1f} ms (min {min(ts):.1f}, max {max(ts):.1f}, "
              f"{len(ts)} runs)")


if __name__ == "__main__":
    main()

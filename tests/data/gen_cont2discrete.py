"""Generates cont2discrete.txt: random continuous (A, B) and scipy.signal.cont2discrete's
(Ad, Bd) for each method, the independent check of src/ssm/discretize.rs.
Run once: python3 tests/data/gen_cont2discrete.py (numpy and scipy; seed fixed)."""
import numpy as np
import scipy
from scipy.signal import cont2discrete

rng = np.random.default_rng(20260529)
methods = ["euler", "backward_diff", "bilinear", "zoh"]
cases = []
for n, m in [(1, 1), (2, 1), (3, 2), (5, 1), (8, 3)]:
    for dt in [1e-3, 0.1, 0.7]:
        a = rng.normal(size=(n, n)) - 0.5 * n * np.eye(n)
        b = rng.normal(size=(n, m))
        cases.append((a, b, dt))
# A singular A (a pure integrator chain): ZOH still defined.
cases.append((np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[0.0], [1.0]]), 0.25))

with open("tests/data/cont2discrete.txt", "w") as out:
    out.write(f"# scipy {scipy.__version__}, numpy {np.__version__}; see gen_cont2discrete.py\n")
    for a, b, dt in cases:
        n, m = b.shape
        for meth in methods:
            ad, bd, *_ = cont2discrete((a, b, np.zeros((1, n)), np.zeros((1, m))), dt, method=meth)
            out.write(f"case {meth} {dt!r} {n} {m}\n")
            for x in (a, b, ad, bd):
                out.write(" ".join(repr(float(v)) for v in x.ravel()) + "\n")

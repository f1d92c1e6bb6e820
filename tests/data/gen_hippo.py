"""Generates hippo_numpy.txt: HiPPO (A, B) written in numpy from the conventions of
state-spaces/s4 hippo.py::transition (legs; legt before its extra 0.5 rescale, divided by the
window theta; lagt with beta = 1), the independent check of `longseq hippo`.
Run once: python3 tests/data/gen_hippo.py"""
import numpy as np

def transition(measure, n, theta):
    q = np.arange(n, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    col, row = np.meshgrid(q, q)
    if measure == "legs":
        a = -np.where(row > col, np.outer(r, r), np.diag(q + 1))
        b = r.copy()
    elif measure == "legt":
        a = -np.outer(r, r) * np.where(row < col, (-1.0) ** (row - col), 1.0) / theta
        b = r / theta
    elif measure == "lagt":
        a = np.eye(n) / 2 - np.tril(np.ones((n, n)))
        b = np.ones(n)
    return a, b

with open("tests/data/hippo_numpy.txt", "w") as out:
    out.write(f"# numpy {np.__version__}; see gen_hippo.py\n")
    for measure in ["legs", "legt", "lagt"]:
        for n, theta in [(1, 1.0), (2, 0.5), (3, 2.0), (16, 1.0), (65, 0.3)]:
            a, b = transition(measure, n, theta)
            out.write(f"case {measure} {n} {theta!r}\n")
            out.write(" ".join(repr(float(v)) for v in a.ravel()) + "\n")
            out.write(" ".join(repr(float(v)) for v in b.ravel()) + "\n")

"""Assertions shared by test files (imported as ``from helpers import ...``: pytest puts tests/ on
``sys.path``, as tests/ is not a package)."""
import numpy as np

TOL = 1e-10


def assert_close(got, want, what, tol=TOL):
    got, want = np.asarray(got), np.asarray(want)
    scale = max(1.0, np.abs(want).max())
    err = np.abs(got - want).max()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"

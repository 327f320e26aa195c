"""Every modReLU of the harness against a NumPy transcription of the reference code, in float64.

The oracles below are written from the reference implementations, not from models/unitary.py:

* complex modReLU, ε "inside" (scuRNN; the paper's eq. (5)); Gayan225/scuRNN scuRNN.py
  (commit c64a62b), ``scuRNNCell.__call__``, lines 79-82::

      modulus = tf.sqrt(Real_res*Real_res + Complex_res*Complex_res+1e-5)
      scale = tf.nn.relu(nn_ops.bias_add(modulus, self._bias))/(modulus+1e-5)
      extended_scale = tf.concat((scale,scale),axis =1)
      output = lin_output*extended_scale

  i.e. ε = 1e-5 both inside the root and in the denominator, the same scale on Re and Im; and
  stwisdom/urnn's full uRNN uses the same formula.
* real modReLU, no ε (scoRNN); SpartinStuff/scoRNN scoRNN.py (commit 3e34d5f),
  ``scoRNNCell.__call__``, lines 75-76::

      output = tf.nn.relu(nn_ops.bias_add(tf.abs(res), self._bias))*(tf.sign(res))

* EURNN's modReLU, ε "outside"; jingli9111/EUNN-tensorflow eunn.py ``modrelu``, lines 15-24::

      norm = tf.abs(inputs) + ε ; biased_norm = norm + bias
      magnitude = relu(biased_norm) ; phase = inputs / norm        (complex)
      magnitude = relu(biased_norm) ; phase = tf.sign(inputs)      (real)

  with ε = 0.01 (EUNN-tensorflow's current eunn.py; older versions have 1e-5), and the
  1e-12 the harness declares inside the root of the complex |z| (models/eurnn.py, unitary.py
  ``modrelu_scale``: a finite gradient at z = 0).

Compared, to 1e-12 (relative to max(1, |value|)): ``unitary.modrelu_scale``,
``modrelu_complex`` ([Re | Im] rows), ``modrelu_cplx`` (complex tensors), the fast path's
in-place ``modrelu_scale_`` (fresh and ``out=`` buffers), ``modrelu_real``, ``modrelu_real_``,
``fastpath.recurrence`` ("modrelu_complex" and "modrelu_real", with and without autograd), the
EURNN partials, and the models' hidden states (fast and plain). Inputs include |z| = 0, tiny
|z|, and |z|_eps within 1e-12..1e-2 of -b on both sides of the ReLU. Gradients (autograd of the
plain functions; the hand-written backward of the fast path) are checked against central finite
differences of the oracles, and for the complex "inside" form also against the paper's closed
form (Theorem 4, the Wirtinger derivatives of eq. (5)) to 1e-11.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.models import build_model
from bench.models import eurnn as eurnn_mod
from bench.models.fastpath import recurrence
from bench.models.unitary import (MODRELU_EPS, complex_to_real_block, modrelu_complex, modrelu_cplx, modrelu_real,
                                  modrelu_real_, modrelu_scale, modrelu_scale_, unroll)

F64 = torch.float64
REF_EPS = 1e-5          # scuRNN.py l.79-80: 1e-5 inside the root and 1e-5 in the denominator
EURNN_EPS = 0.01        # EUNN-tensorflow eunn.py modrelu (current code)
EURNN_ROOT = 1e-12      # the harness's declared addition inside EURNN's root (models/eurnn.py)
TOL = 1e-12


# ---- the oracles (NumPy, float64) -----------------------------------------------------------

def oracle_inside(re, im, b, eps_sqrt=REF_EPS, eps=REF_EPS):
    """scuRNN.py: modulus = sqrt(re^2 + im^2 + 1e-5); scale = relu(modulus + b) / (modulus + 1e-5)."""
    modulus = np.sqrt(re * re + im * im + eps_sqrt)
    scale = np.maximum(modulus + b, 0.0) / (modulus + eps)
    return re * scale, im * scale, scale, modulus


def oracle_outside(re, im, b, eps=EURNN_EPS, root=EURNN_ROOT):
    """EUNN-tensorflow eunn.py: norm = |z| + eps; (z / norm) * relu(norm + b)."""
    norm = np.sqrt(re * re + im * im + root) + eps
    mag = np.maximum(norm + b, 0.0)
    return re / norm * mag, im / norm * mag, mag / norm


def oracle_real(z, b, eps=0.0):
    """scoRNN.py: relu(|z| + b) * sign(z) (EURNN's real version adds eps to |z|)."""
    return np.maximum(np.abs(z) + eps + b, 0.0) * np.sign(z)


def wirtinger_inside(re, im, b, eps=REF_EPS):
    """The paper's Theorem 4 (∂σ/∂z, ∂σ/∂z̄ of eq. (5)) and ∂σ/∂b, where ẑ + b >= 0 (else 0)."""
    z = re + 1j * im
    zh = np.sqrt(re * re + im * im + eps)
    on = zh + b >= 0
    d_z = np.where(on, (zh + b) / (zh + eps) + np.abs(z) ** 2 * (eps - b) / (2 * zh * (zh + eps) ** 2), 0)
    d_zbar = np.where(on, z ** 2 * (eps - b) / (2 * zh * (zh + eps) ** 2), 0)
    d_b = np.where(on, z / (zh + eps), 0)
    return d_z, d_zbar, d_b


def close(got, want, what, tol=TOL):
    got = got.detach().numpy() if torch.is_tensor(got) else np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    i = np.unravel_index(np.argmax(err), err.shape) if err.size else ()
    assert err.max(initial=0) <= tol, (f"{what}: relative error {err.max():.3g} > {tol:g} at {i}: "
                                       f"got {got[i]!r}, want {want[i]!r}")


# ---- inputs ---------------------------------------------------------------------------------

# one bias per complex unit: off at z = 0 (b < -sqrt(eps)), barely on, 0, positive (the paper's
# singular zone |z| << b), large negative
BIASES = np.array([-0.5, -0.1, -0.01, -0.002, 0.0, 0.01, 0.5, -2.0])
DELTAS = (-1e-2, -1e-4, -1e-6, -1e-9, -1e-12, 0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-2)


def _phases(rng, shape):
    a = rng.uniform(-np.pi, np.pi, shape)
    return np.cos(a), np.sin(a)


def complex_points(*, kink_margin: float = 0.0, seed: int = 0, modulus=None):
    """(re, im) of shape (rows, 8): random z at many scales, |z| = 0 and tiny, and |z| placed so
    that the modulus ``modulus(|z|)`` sits at -b + δ for every δ in DELTAS whose |δ| >= kink_margin."""
    modulus = modulus or (lambda r: np.sqrt(r * r + REF_EPS))
    rng = np.random.default_rng(seed)
    n = len(BIASES)
    rows = []
    for scale in (1e-6, 1e-3, 0.03, 0.3, 1.0, 3.0, 30.0):
        c, s = _phases(rng, (3, n))
        r = scale * rng.uniform(0.2, 2.0, (3, n))
        rows.append((r * c, r * s))
    for r0 in (0.0, 1e-300, 1e-150, 1e-12, 1e-8, 1e-5, 1e-4, 3e-3):
        c, s = _phases(rng, (1, n))
        rows.append((r0 * c, r0 * s))
    rows.append((np.zeros((1, n)), np.full((1, n), 1e-7)))          # purely imaginary, tiny
    rows.append((np.full((1, n), -2e-3), np.zeros((1, n))))         # purely real, negative
    for delta in DELTAS:
        if abs(delta) < kink_margin:
            continue
        target = -BIASES + delta                                    # wanted modulus per unit
        r = np.array([_invert(modulus, t) for t in target])
        c, s = _phases(rng, (1, n))
        rows.append((r * c, r * s))
    re = np.concatenate([a for a, _ in rows])
    im = np.concatenate([b for _, b in rows])
    return re, im


def _invert(modulus, target):
    """The |z| >= 0 whose modulus is ``target`` (bisection), or a random-ish 0.7 if unreachable."""
    if target <= modulus(0.0):
        return 0.7
    lo, hi = 0.0, target + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if modulus(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def test_inputs_cover_both_sides_of_the_relu_and_the_kink():
    re, im = complex_points()
    b = BIASES
    _, _, scale, modulus = oracle_inside(re, im, b)
    assert (scale == 0).any() and (scale > 0).any()
    gap = np.abs(modulus + b)
    assert (gap < 1e-11).any() and ((gap > 0) & (gap < 1e-8)).sum() >= 8    # within 1e-12..1e-9 of the kink
    assert (re == 0).any() and ((re * re + im * im) == 0).any()


# ---- complex modReLU, ε inside (scuRNN) ----------------------------------------------------

def test_reference_epsilon_constant():
    assert MODRELU_EPS == REF_EPS


def _row(re, im):
    return torch.from_numpy(np.concatenate([re, im], axis=-1))


def test_complex_inside_forward_every_implementation():
    re, im = complex_points()
    want_re, want_im, want_s, want_mod = oracle_inside(re, im, BIASES)
    want_row = np.concatenate([want_re, want_im], axis=-1)
    tre, tim, tb = torch.from_numpy(re), torch.from_numpy(im), torch.from_numpy(BIASES)
    n = len(BIASES)

    close(modrelu_scale(tre * tre + tim * tim, tb), want_s, "modrelu_scale")
    close(modrelu_complex(_row(re, im), tb), want_row, "modrelu_complex")
    close(modrelu_complex(_row(re, im), tb, eps=REF_EPS, placement="inside"), want_row, "modrelu_complex(explicit)")
    out = modrelu_cplx(torch.complex(tre, tim), tb)
    assert out.dtype == torch.complex128
    close(out.real, want_re, "modrelu_cplx re")
    close(out.imag, want_im, "modrelu_cplx im")

    # the fast path's in-place kernel, on fresh tensors and into scratch buffers
    e_sqrt, e = torch.tensor(REF_EPS, dtype=F64), torch.tensor(REF_EPS, dtype=F64)
    mag, s, den = modrelu_scale_(tre, tim, tb, e_sqrt, e)
    close(mag, want_mod, "modrelu_scale_ |z|_eps")
    close(s, want_s, "modrelu_scale_ s")
    close(den, want_mod + REF_EPS, "modrelu_scale_ |z|_eps + eps")
    buf = tuple(torch.empty_like(tre) for _ in range(3))
    mag2, s2, den2 = modrelu_scale_(tre, tim, tb, e_sqrt, e, out=buf)
    assert s2.data_ptr() == buf[1].data_ptr()
    close(s2, want_s, "modrelu_scale_(out=) s")

    # the fused recurrence with W = 0, h0 = 0: h_1 = modReLU(xu_1), with and without autograd
    xu = _row(re, im).unsqueeze(1)                       # (rows, 1, 2n)
    h0, W = torch.zeros(1, 2 * n, dtype=F64), torch.zeros(2 * n, 2 * n, dtype=F64)
    with torch.no_grad():
        close(recurrence(xu, h0, W, tb, "modrelu_complex")[:, 0], want_row, "recurrence (no grad)")
    close(recurrence(xu.clone().requires_grad_(), h0, W, tb, "modrelu_complex")[:, 0], want_row,
          "recurrence (autograd Function)")
    close(unroll(xu, h0, W, lambda z: modrelu_complex(z, tb))[:, 0], want_row, "unroll + modrelu_complex")


def test_complex_inside_other_epsilons():
    """The ε arguments go where the reference puts its 1e-5: eps_sqrt in the root, eps below."""
    re, im = complex_points(seed=3)
    tb = torch.from_numpy(BIASES)
    n = len(BIASES)
    for eps_sqrt, eps in ((1e-3, 1e-3), (1e-4, 1e-2), (0.0, 1e-5)):
        if eps_sqrt == 0.0:
            keep = (re * re + im * im) > 1e-20            # sqrt(0) + ... is fine, but keep |z| > 0
            re_, im_ = np.where(keep, re, 1e-3), np.where(keep, im, 0.0)
        else:
            re_, im_ = re, im
        want_re, want_im, want_s, _ = oracle_inside(re_, im_, BIASES, eps_sqrt=eps_sqrt, eps=eps)
        want = np.concatenate([want_re, want_im], axis=-1)
        if eps_sqrt == eps:
            close(modrelu_complex(_row(re_, im_), tb, eps=eps), want, f"modrelu_complex eps={eps}")
        mag, s, den = modrelu_scale_(torch.from_numpy(re_), torch.from_numpy(im_), tb,
                                     torch.tensor(eps_sqrt, dtype=F64), torch.tensor(eps, dtype=F64))
        close(s, want_s, f"modrelu_scale_ eps_sqrt={eps_sqrt} eps={eps}")
        xu = _row(re_, im_).unsqueeze(1)
        h0, W = torch.zeros(1, 2 * n, dtype=F64), torch.zeros(2 * n, 2 * n, dtype=F64)
        got = recurrence(xu, h0, W, tb, "modrelu_complex", eps=eps, eps_sqrt=eps_sqrt)[:, 0]
        close(got, want, f"recurrence eps_sqrt={eps_sqrt} eps={eps}")


def _fd_complex(f, re, im, b, h=1e-7):
    """Elementwise central differences of f(re, im, b) -> (out_re, out_im) (each output entry
    depends only on its own re, im, b): d(out)/d(re), d(out)/d(im), d(out)/d(b)."""
    def d(which):
        args_p, args_m = [re, im, b], [re, im, b]
        args_p = [a + h if i == which else a for i, a in enumerate(args_p)]
        args_m = [a - h if i == which else a for i, a in enumerate(args_m)]
        (pr, pi), (mr, mi) = f(*args_p)[:2], f(*args_m)[:2]
        return (pr - mr) / (2 * h), (pi - mi) / (2 * h)
    return d(0), d(1), d(2)


def _vjp_from_jacobian(v_re, v_im, d_re, d_im, d_b):
    """Cotangent (v_re, v_im) times the elementwise Jacobian: grads of re, im and b (b summed over rows)."""
    g_re = v_re * d_re[0] + v_im * d_re[1]
    g_im = v_re * d_im[0] + v_im * d_im[1]
    g_b = (v_re * d_b[0] + v_im * d_b[1]).sum(0)
    return g_re, g_im, g_b


def test_complex_inside_gradients_every_implementation():
    re, im = complex_points(kink_margin=1e-4, seed=1)           # FD steps of 1e-7 never cross the kink
    b = np.broadcast_to(BIASES, re.shape).copy()
    n = len(BIASES)
    rng = np.random.default_rng(7)
    v_re, v_im = rng.standard_normal(re.shape), rng.standard_normal(re.shape)

    # oracle 1: central differences of the NumPy transcription
    fd = _vjp_from_jacobian(v_re, v_im, *_fd_complex(oracle_inside, re, im, b))
    # oracle 2: the paper's Theorem 4, as a real Jacobian (∂/∂x = ∂z + ∂z̄, ∂/∂y = i(∂z - ∂z̄))
    d_z, d_zbar, d_b = wirtinger_inside(re, im, b)
    dx, dy = d_z + d_zbar, 1j * (d_z - d_zbar)
    closed = (v_re * dx.real + v_im * dx.imag, v_re * dy.real + v_im * dy.imag,
              (v_re * d_b.real + v_im * d_b.imag).sum(0))
    for name, a, c in zip(("re", "im", "b"), fd, closed):
        close(a, c, f"finite differences vs Theorem 4, d{name}", tol=1e-6)

    def check(name, g_re, g_im, g_b):
        for what, got, want_fd, want_closed in zip(("re", "im", "b"), (g_re, g_im, g_b), fd, closed):
            close(got, want_fd, f"{name}: d{what} vs finite differences", tol=1e-6)
            close(got, want_closed, f"{name}: d{what} vs Theorem 4", tol=1e-11)

    tb = torch.from_numpy(BIASES).requires_grad_()
    v_row = _row(v_re, v_im)

    z = _row(re, im).requires_grad_()
    g_z, g_b = torch.autograd.grad(modrelu_complex(z, tb), (z, tb), v_row)
    check("modrelu_complex", g_z[:, :n], g_z[:, n:], g_b)

    tre, tim = torch.from_numpy(re).requires_grad_(), torch.from_numpy(im).requires_grad_()
    out = modrelu_cplx(torch.complex(tre, tim), tb)
    g_re, g_im, g_b = torch.autograd.grad((out.real * torch.from_numpy(v_re)).sum()
                                          + (out.imag * torch.from_numpy(v_im)).sum(), (tre, tim, tb))
    check("modrelu_cplx", g_re, g_im, g_b)

    # the fused recurrence's hand-written backward (W = 0, h0 = 0: one step is one modReLU)
    xu = _row(re, im).unsqueeze(1).requires_grad_()
    h0, W = torch.zeros(1, 2 * n, dtype=F64), torch.zeros(2 * n, 2 * n, dtype=F64)
    g_xu, g_b = torch.autograd.grad(recurrence(xu, h0, W, tb, "modrelu_complex"), (xu, tb), v_row.unsqueeze(1))
    check("recurrence backward", g_xu[:, 0, :n], g_xu[:, 0, n:], g_b)


def test_complex_gradient_at_zero_is_the_scale():
    """At z = 0 the Jacobian of eq. (5) is s(0) I with s(0) = relu(sqrt(eps) + b) / (sqrt(eps) + eps):
    about 158 for b = 0.5 (the paper's large-derivative zone), 0 where sqrt(eps) + b < 0."""
    n = len(BIASES)
    s0 = np.maximum(np.sqrt(REF_EPS) + BIASES, 0) / (np.sqrt(REF_EPS) + REF_EPS)
    assert s0[BIASES == 0.5][0] == pytest.approx(158.6, abs=0.1)
    tb = torch.from_numpy(BIASES)
    for unit_v in (np.r_[np.ones(n), np.zeros(n)], np.r_[np.zeros(n), np.ones(n)]):
        v = torch.from_numpy(unit_v)[None]
        z = torch.zeros(1, 2 * n, dtype=F64, requires_grad=True)
        (g,) = torch.autograd.grad(modrelu_complex(z, tb), z, v)
        close(g[0], unit_v * np.r_[s0, s0], "modrelu_complex grad at 0")
        xu = torch.zeros(1, 1, 2 * n, dtype=F64, requires_grad=True)
        h0, W = torch.zeros(1, 2 * n, dtype=F64), torch.zeros(2 * n, 2 * n, dtype=F64)
        (g,) = torch.autograd.grad(recurrence(xu, h0, W, tb, "modrelu_complex"), xu, v[:, None])
        close(g[0, 0], unit_v * np.r_[s0, s0], "recurrence grad at 0")


# ---- complex modReLU, ε outside (EURNN) ----------------------------------------------------

def test_eurnn_modrelu_forward():
    assert eurnn_mod.EPS == EURNN_EPS
    outside_mod = lambda r: np.sqrt(r * r + EURNN_ROOT) + EURNN_EPS       # noqa: E731
    re, im = complex_points(modulus=outside_mod, seed=4)
    want_re, want_im, want_s = oracle_outside(re, im, BIASES)
    want = np.concatenate([want_re, want_im], axis=-1)
    tb = torch.from_numpy(BIASES)
    tre, tim = torch.from_numpy(re), torch.from_numpy(im)
    close(modrelu_scale(tre * tre + tim * tim, tb, EURNN_EPS, "outside"), want_s, "modrelu_scale outside")
    close(modrelu_complex(_row(re, im), tb, eps=EURNN_EPS, placement="outside"), want, "modrelu_complex outside")
    close(eurnn_mod.modrelu_eurnn(_row(re, im), tb), want, "eurnn.modrelu_eurnn")
    out = eurnn_mod.modrelu_eurnn_cplx(torch.complex(tre, tim), tb)
    close(out.real, want_re, "eurnn.modrelu_eurnn_cplx re")
    close(out.imag, want_im, "eurnn.modrelu_eurnn_cplx im")
    # the literal EUNN formula (no 1e-12 in the root) agrees where |z| is not tiny
    big = (re * re + im * im) > 1e-2
    lit_re, lit_im, _ = oracle_outside(re, im, BIASES, root=0.0)
    close(np.where(big, want_re, 0), np.where(big, lit_re, 0), "1e-12 in the root is negligible", tol=1e-10)


def test_eurnn_modrelu_gradients():
    outside_mod = lambda r: np.sqrt(r * r + EURNN_ROOT) + EURNN_EPS       # noqa: E731
    re, im = complex_points(modulus=outside_mod, kink_margin=1e-4, seed=5)
    keep = (re * re + im * im) > 1e-8        # the 1e-12 root makes |z| -> 0 steep: FD needs |z| >> 1e-7
    re, im = np.where(keep, re, 0.05), np.where(keep, im, 0.02)
    b = np.broadcast_to(BIASES, re.shape).copy()
    rng = np.random.default_rng(8)
    v_re, v_im = rng.standard_normal(re.shape), rng.standard_normal(re.shape)
    fd = _vjp_from_jacobian(v_re, v_im, *_fd_complex(oracle_outside, re, im, b, h=1e-8))
    n = len(BIASES)
    tb = torch.from_numpy(BIASES).requires_grad_()
    z = _row(re, im).requires_grad_()
    g_z, g_b = torch.autograd.grad(eurnn_mod.modrelu_eurnn(z, tb), (z, tb), _row(v_re, v_im))
    for what, got, want in zip(("re", "im", "b"), (g_z[:, :n], g_z[:, n:], g_b), fd):
        close(got, want, f"modrelu_eurnn d{what} vs finite differences", tol=1e-5)


# ---- real modReLU (scoRNN, expRNN; EURNN's real version) ------------------------------------

REAL_BIASES = np.array([-0.5, -0.1, -1e-3, 0.0, 1e-3, 0.5, -2.0])


def real_points(kink_margin=0.0, seed=0, eps=0.0):
    rng = np.random.default_rng(seed)
    n = len(REAL_BIASES)
    rows = [rng.standard_normal((6, n)) * s for s in (1e-3, 0.1, 1.0, 10.0)]
    rows += [np.full((1, n), v) for v in (0.0, -0.0, 1e-300, -1e-300, 1e-12, -1e-8)]
    for delta in DELTAS:
        if abs(delta) < kink_margin:
            continue
        mag = np.maximum(-REAL_BIASES - eps + delta, 0.3)            # |z| + eps + b = delta where reachable
        rows.append(mag * rng.choice([-1.0, 1.0], n))
    return np.concatenate([np.atleast_2d(r) for r in rows])


@pytest.mark.parametrize("eps", [0.0, EURNN_EPS], ids=["scornn", "eurnn"])
def test_real_forward_every_implementation(eps):
    z = real_points(eps=eps)
    want = oracle_real(z, REAL_BIASES, eps)
    assert (want == 0).any() and (want != 0).any()
    tz, tb = torch.from_numpy(z), torch.from_numpy(REAL_BIASES)
    if eps:
        close(eurnn_mod.modrelu_eurnn_real(tz, tb), want, "eurnn.modrelu_eurnn_real")
        close(modrelu_real(tz, tb, eps=eps), want, "modrelu_real(eps)")
        return
    close(modrelu_real(tz, tb), want, "modrelu_real")
    out = torch.empty_like(tz)
    close(modrelu_real_(tz, tb, torch.empty_like(tz), out), want, "modrelu_real_")
    zc = tz.clone()
    close(modrelu_real_(zc, tb, torch.empty_like(tz), zc), want, "modrelu_real_ in place")
    n = len(REAL_BIASES)
    h0, W = torch.zeros(1, n, dtype=F64), torch.zeros(n, n, dtype=F64)
    with torch.no_grad():
        close(recurrence(tz.unsqueeze(1), h0, W, tb, "modrelu_real")[:, 0], want, "recurrence real (no grad)")
    close(recurrence(tz.unsqueeze(1).requires_grad_(), h0, W, tb, "modrelu_real")[:, 0], want,
          "recurrence real (autograd Function)")


def test_real_gradients_every_implementation():
    z = real_points(kink_margin=1e-4, seed=2)
    z = np.where(np.abs(z) < 1e-4, 0.37, z)                       # no FD across the jump at 0
    b = np.broadcast_to(REAL_BIASES, z.shape).copy()
    h = 1e-7
    d_z = (oracle_real(z + h, b) - oracle_real(z - h, b)) / (2 * h)
    d_b = (oracle_real(z, b + h) - oracle_real(z, b - h)) / (2 * h)
    v = np.random.default_rng(9).standard_normal(z.shape)
    want_z, want_b = v * d_z, (v * d_b).sum(0)
    # and exactly: 1 where on, 0 where off; d/db = sign(z) where on
    on = np.abs(z) + b > 0
    close(want_z, v * on, "FD vs exact dz", tol=1e-6)
    close(want_b, (v * np.sign(z) * on).sum(0), "FD vs exact db", tol=1e-6)
    n = len(REAL_BIASES)
    tb = torch.from_numpy(REAL_BIASES).requires_grad_()
    tv = torch.from_numpy(v)
    tz = torch.from_numpy(z).requires_grad_()
    g_z, g_b = torch.autograd.grad(modrelu_real(tz, tb), (tz, tb), tv)
    close(g_z, want_z, "modrelu_real dz", tol=1e-6)
    close(g_b, want_b, "modrelu_real db", tol=1e-6)
    xu = torch.from_numpy(z).unsqueeze(1).requires_grad_()
    h0, W = torch.zeros(1, n, dtype=F64), torch.zeros(n, n, dtype=F64)
    g_xu, g_b = torch.autograd.grad(recurrence(xu, h0, W, tb, "modrelu_real"), (xu, tb), tv.unsqueeze(1))
    close(g_xu[:, 0], want_z, "recurrence real dxu", tol=1e-6)
    close(g_b, want_b, "recurrence real db", tol=1e-6)


# ---- whole recurrences: fast and plain against a NumPy recurrence --------------------------

def np_recurrence(xu, h0, W, b, act):
    """h_t = act(xu_t + h_{t-1} W), row convention, on real [Re | Im] rows for complex acts."""
    B, L, d = xu.shape
    h = np.broadcast_to(h0, (B, d))
    out = np.empty_like(xu)
    for t in range(L):
        z = xu[:, t] + h @ W
        if act == "modrelu_complex":
            n = d // 2
            r, i, _, _ = oracle_inside(z[:, :n], z[:, n:], b)
            h = np.concatenate([r, i], axis=-1)
        else:
            h = oracle_real(z, b)
        out[:, t] = h
    return out


def _unitary_block(n, rng):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    return complex_to_real_block(torch.from_numpy(q)).numpy()


@pytest.mark.parametrize("activation", ["modrelu_complex", "modrelu_real"])
def test_recurrence_against_numpy_recurrence(activation):
    rng = np.random.default_rng(11)
    B, L, n = 2, 5, 3
    d = 2 * n if activation == "modrelu_complex" else n
    xu = 0.6 * rng.standard_normal((B, L, d))
    h0 = 0.3 * rng.standard_normal((1, d))
    W = _unitary_block(n, rng) if activation == "modrelu_complex" else np.linalg.qr(rng.standard_normal((d, d)))[0]
    b = np.linspace(-0.7, 0.2, n if activation == "modrelu_complex" else d)
    want = np_recurrence(xu, h0, W, b, activation)
    assert (want == 0).any() and (want != 0).any()
    leaves = [torch.from_numpy(a.copy()).requires_grad_() for a in (xu, h0, W, b)]
    act = (lambda z: modrelu_complex(z, leaves[3])) if activation == "modrelu_complex" else \
        (lambda z: modrelu_real(z, leaves[3]))
    outs = {"fast": recurrence(*leaves, activation), "plain": unroll(leaves[0], leaves[1], leaves[2], act)}
    v = rng.standard_normal(want.shape)
    # central differences of the NumPy recurrence for every input entry
    arrays = [xu, h0, W, b]
    fd = []
    step = 1e-7
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[k][idx] += step
            minus[k][idx] -= step
            g[idx] = ((np_recurrence(*plus, activation) - np_recurrence(*minus, activation)) * v).sum() / (2 * step)
        fd.append(g)
    for name, out in outs.items():
        close(out, want, f"{name} recurrence states")
        grads = torch.autograd.grad(out, leaves, torch.from_numpy(v))
        for what, got, want_g in zip(("xu", "h0", "W", "bias"), grads, fd):
            close(got, want_g, f"{name} recurrence d{what} vs finite differences", tol=1e-6)


# ---- the models' hidden states ---------------------------------------------------------------

MODELS = [
    ("scurnn", {"fast": True}, None), ("scurnn", {"fast": False}, None),
    ("fcurnn", {}, True), ("fcurnn", {}, False),
    ("urnn", {"dense": True}, None), ("urnn", {"dense": False}, None),
    ("dtriv", {"complex": True, "fast": True}, None), ("dtriv", {"complex": True, "fast": False}, None),
    ("scornn", {"fast": True}, None), ("scornn", {"fast": False}, None),
    ("exprnn", {"fast": True}, None), ("exprnn", {"fast": False}, None),
    ("dtriv", {"fast": True}, None), ("dtriv", {"fast": False}, None),
    ("eurnn", {"readout": "reim", "dense": True}, None), ("eurnn", {"readout": "reim", "dense": False}, None),
    ("eurnn", {"complex": False, "dense": True}, None), ("eurnn", {"complex": False, "dense": False}, None),
]


@pytest.mark.parametrize("name, options, fast", MODELS,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items()) or f'fast={f}'}" for m, o, f in MODELS])
def test_model_states_against_oracle(name, options, fast):
    """model(x) == readout(oracle recurrence) with the model's own U, h0, bias and W."""
    torch.manual_seed(0)
    n = 4
    model = build_model(name, d_input=3, d_output=2, n_hidden=n, **options).double()
    if fast is not None:
        model.fast = fast
    complex_state = model.h0.shape[-1] == 2 * n
    with torch.no_grad():
        model.bias.copy_(torch.linspace(-0.6, 0.3, model.bias.numel(), dtype=F64))
    x = torch.randn(2, 7, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        W = model.recurrent_matrix().detach()
        xu = (x @ model.U).numpy()
        h0, b = model.h0.detach().numpy(), model.bias.detach().numpy()
    W_real = complex_to_real_block(W).numpy() if W.is_complex() else W.numpy()
    is_eurnn = name == "eurnn"
    B, L, d = xu.shape
    h = np.broadcast_to(h0, (B, d))
    hs = np.empty_like(xu)
    for t in range(L):
        z = xu[:, t] + h @ W_real
        if complex_state:
            r, i = (oracle_outside(z[:, :n], z[:, n:], b)[:2] if is_eurnn else oracle_inside(z[:, :n], z[:, n:], b)[:2])
            h = np.concatenate([r, i], axis=-1)
        else:
            h = oracle_real(z, b, EURNN_EPS if is_eurnn else 0.0)
        hs[:, t] = h
    assert (hs == 0).any() and (hs != 0).any(), "the test should hit both sides of the ReLU"
    with torch.no_grad():
        want = model.readout(torch.from_numpy(hs))
    close(got, want.numpy(), f"{name} {options} outputs")

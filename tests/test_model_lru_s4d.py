"""lru and s4d against NumPy transcriptions of their papers' code, in float64.

The LRU oracle follows the paper's Appendix A ``forward_LRU`` step by step (one state update
per time step) and minimal-LRU's block (tanh-GELU, then GLU). The S4D oracle follows the
official ``models/s4/s4d.py``: it builds the convolution kernel K_l = 2 Re(C (e^{ΔA} - 1)/A e^{ΔA l})
(Vandermonde form) and convolves directly (no FFT), so with fast=True it checks the model's FFT
convolution and with fast=False that the model's recurrence equals the official convolution.
Both read the model's parameters, nothing else. fast=True (lru: the parallel scan; s4d: the FFT
convolution) equals fast=False (the step loop) in outputs and every gradient, up to L = 784
(pixel MNIST).
"""
import math

import numpy as np
import pytest
import torch

from bench.errors import ConfigError, InvalidHiddenSizeError
from bench.models import build_model, get_model_class

B, L, M, P = 2, 7, 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _numpy_params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.named_parameters()}


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu_erf(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _glu_readout(g, q):
    # [a | b] = W g + b_g; z = a * sigmoid(b); out = W_o z + b_o
    ab = g @ q["glu.weight"].T + q["glu.bias"]
    H = ab.shape[-1] // 2
    z = ab[..., :H] / (1 + np.exp(-ab[..., H:]))
    return z @ q["readout.weight"].T + q["readout.bias"]


def lru_numpy(q, x):
    """Paper Appendix A (forward_LRU) as a loop over t, inside minimal-LRU's block."""
    u = x @ q["encoder.weight"].T + q["encoder.bias"]                    # (B, L, H)
    lam = np.exp(-np.exp(q["nu_log"]) + 1j * np.exp(q["theta_log"]))   # (N,)
    B_norm = (q["B_re"] + 1j * q["B_im"]) * np.exp(q["gamma_log"])[:, None]   # (N, H)
    C = q["C_re"] + 1j * q["C_im"]                                      # (H, N)
    h = np.zeros((x.shape[0], lam.shape[0]), dtype=complex)
    ys = []
    for t in range(x.shape[1]):
        h = lam * h + u[:, t] @ B_norm.T
        ys.append((h @ C.T).real + q["D"] * u[:, t])
    y = np.stack(ys, axis=1)
    return _glu_readout(_gelu_tanh(y), q)


def s4d_numpy(q, x):
    """Official s4d.py: S4DKernel's kernel, a causal convolution, + D u, GELU, Conv1d+GLU."""
    u = x @ q["encoder.weight"].T + q["encoder.bias"]                    # (B, L, H)
    length = x.shape[1]
    dt = np.exp(q["log_dt"])                                             # (H,)
    C = q["C"][..., 0] + 1j * q["C"][..., 1]                             # (H, N/2)
    A = -np.exp(q["log_A_real"]) + 1j * q["A_imag"]
    dtA = A * dt[:, None]
    vandermonde = np.exp(dtA[..., None] * np.arange(length))            # (H, N/2, L)
    K = 2 * np.einsum("hn,hnl->hl", C * (np.exp(dtA) - 1) / A, vandermonde).real   # (H, L)
    y = np.zeros_like(u)
    for t in range(length):
        for l in range(t + 1):
            y[:, t] += K[:, l] * u[:, t - l]
    y = y + u * q["D"]
    return _glu_readout(_gelu_erf(y), q)


ORACLES = {"lru": lru_numpy, "s4d": s4d_numpy}
SMALL = {"lru": {"d_state": 5, "r_min": 0.5, "r_max": 0.99, "max_phase": 3.0}, "s4d": {"d_state": 6}}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("name", ["lru", "s4d"])
def test_forward_equals_numpy_transcription(name, fast):
    torch.manual_seed(0)
    model = build_model(name, M, P, 4, fast=fast, **SMALL[name]).double()
    with torch.no_grad():             # move every parameter off its structured init (zero biases, S4D-Lin grid)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(B, L, M, dtype=torch.float64)
    got = model(x).detach().numpy()
    want = ORACLES[name](_numpy_params(model), x.numpy())
    assert got.shape == (B, L, P)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("length", [7, 13, 784])
@pytest.mark.parametrize("name", ["lru", "s4d"])
def test_fast_scan_equals_step_loop_outputs_and_gradients(name, length):
    torch.manual_seed(1)
    fast = build_model(name, M, P, 5, fast=True, **SMALL[name]).double()
    slow = build_model(name, M, P, 5, fast=False, **SMALL[name]).double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(B, length, M, dtype=torch.float64)
    w = torch.randn(B, length, P, dtype=torch.float64)
    out_fast, out_slow = fast(x), slow(x)
    torch.testing.assert_close(out_fast, out_slow, rtol=0, atol=1e-10)
    (out_fast * w).sum().backward()
    (out_slow * w).sum().backward()
    for (k, p), q in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10, msg=k)


@pytest.mark.parametrize("name,opts", [("lru", {}), ("lru", {"d_state": 1}), ("lru", {"d_state": 7, "r_min": 0.9}),
                                       ("s4d", {}), ("s4d", {"d_state": 2}), ("s4d", {"d_state": 10, "dt_max": 0.5})])
@pytest.mark.parametrize("n,m,p", [(1, 1, 1), (4, 1, 10), (8, 10, 9), (5, 3, 2)])
def test_count_equals_formula(name, opts, n, m, p):
    cls = get_model_class(name)
    model = build_model(name, m, p, n, **opts)
    assert model.count_params() == cls.param_count(n, m, p, **opts)
    # and the closed forms of the module docstrings
    H = n
    if name == "lru":
        N = opts.get("d_state", 128)
        assert cls.param_count(n, m, p, **opts) == 2 * H * H + 4 * N * H + 3 * N + (m + p + 4) * H + p
    else:
        N = opts.get("d_state", 64)
        assert cls.param_count(n, m, p, **opts) == 2 * H * H + 2 * N * H + (m + p + 5) * H + p
    groups = model.param_groups()
    assert sorted(id(q) for ps in groups.values() for q in ps) == sorted(id(q) for q in model.parameters())
    recurrence = {"lru": ["nu_log", "theta_log", "gamma_log"], "s4d": ["log_A_real", "A_imag", "log_dt"]}[name]
    assert [id(q) for q in groups["A"]] == [id(getattr(model, k)) for k in recurrence]


def test_lru_ring_initialisation():
    torch.manual_seed(2)
    r_min, r_max, max_phase, N = 0.4, 0.9, math.pi, 4000
    model = build_model("lru", 1, 1, 1, d_state=N, r_min=r_min, r_max=r_max, max_phase=max_phase).double()
    radius = torch.exp(-torch.exp(model.nu_log.detach()))
    phase = torch.exp(model.theta_log.detach())
    tol = 1e-6                        # the parameters are drawn in float64 and stored in float32
    assert radius.min() >= r_min - tol and radius.max() <= r_max + tol
    assert phase.min() >= 0 and phase.max() <= max_phase + tol
    # uniform on the ring: |λ|² and the phase are uniform, so their means sit mid-range (5 sigma)
    for sample, lo, hi in ((radius ** 2, r_min ** 2, r_max ** 2), (phase, 0.0, max_phase)):
        assert abs(sample.mean().item() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * N)
    torch.testing.assert_close(model.eigenvalues().detach().abs(), radius)
    torch.testing.assert_close(torch.exp(model.gamma_log.detach()), torch.sqrt(1 - radius ** 2), rtol=1e-5, atol=1e-6)
    # the paper's defaults (r_min = 0, r_max = 1): still strictly stable
    default = build_model("lru", 1, 1, 1, d_state=N).double()
    assert default.eigenvalues().abs().max() < 1
    assert get_model_class("lru").options() == {"d_state": 128, "r_min": 0.0, "r_max": 1.0, "max_phase": 6.28,
                                                "fast": True}


def test_s4d_lin_initialisation_and_stable_discretisation():
    torch.manual_seed(3)
    H, N = 500, 8
    model = build_model("s4d", 1, 1, H, d_state=N).double()
    A = torch.complex(-torch.exp(model.log_A_real), model.A_imag).detach()
    torch.testing.assert_close(A.real, torch.full((H, N // 2), -0.5, dtype=torch.float64))
    torch.testing.assert_close(A.imag, math.pi * torch.arange(N // 2, dtype=torch.float64).expand(H, -1))
    dt = torch.exp(model.log_dt.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    # log-uniform: the mean of log dt is mid-range (5 sigma)
    lo, hi = math.log(1e-3), math.log(1e-1)
    assert abs(model.log_dt.mean().item() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * H)
    A_bar, B_bar = model.discretized()
    assert A_bar.abs().max() < 1
    torch.testing.assert_close(A_bar.detach(), torch.exp(dt.unsqueeze(-1) * A))
    torch.testing.assert_close(B_bar.detach(), (torch.exp(dt.unsqueeze(-1) * A) - 1) / A)


@pytest.mark.parametrize("name", ["lru", "s4d"])
def test_nonlinear_in_the_input(name):
    torch.manual_seed(4)
    model = build_model(name, M, P, 6, **SMALL[name]).double()
    x1, x2 = torch.randn(B, L, M, dtype=torch.float64), torch.randn(B, L, M, dtype=torch.float64)
    zero = torch.zeros_like(x1)
    with torch.no_grad():
        defect = model(x1 + x2) - model(x1) - model(x2) + model(zero)   # 0 for an affine map
    assert defect.abs().max() > 1e-2


@pytest.mark.parametrize("name,opts,error,message", [
    ("lru", {"d_state": 0}, InvalidHiddenSizeError, r"^lru: state size d_state must be a positive integer, got 0$"),
    ("lru", {"r_min": 0.9, "r_max": 0.5}, ConfigError, r"r_min <= r_max <= 1 and r_min < 1, got r_min=0.9, r_max=0.5$"),
    ("lru", {"r_min": 1.0, "r_max": 1.0}, ConfigError, r"r_min < 1, got r_min=1.0, r_max=1.0$"),
    ("lru", {"max_phase": 0.0}, ConfigError, r"^lru: max_phase must be positive"),
    ("s4d", {"d_state": 7}, InvalidHiddenSizeError, r"^s4d: state size d_state must be a positive even integer"),
    ("s4d", {"dt_min": 0.2}, ConfigError, r"0 < dt_min <= dt_max, got dt_min=0.2, dt_max=0.1$"),
])
def test_invalid_options_raise_their_error(name, opts, error, message):
    with pytest.raises(error, match=message):
        build_model(name, 2, 1, 8, **opts)
    with pytest.raises(error, match=message):
        get_model_class(name).hidden_for_budget(10_000, 2, 1, **opts)

"""minGRU and minLSTM (models/mingru.py, models/minlstm.py) against independent computations.

* A NumPy transcription of the paper's sequential mode (Feng et al. 2024, arXiv:2410.01201,
  Algorithms 5 and 7, the log-space versions with g; Algorithms 1 and 3 are the same without g) plus the initial state g(h0) of the
  authors' code and a per-step linear readout, fed the model's own parameters: the model equals
  it in float64 to 1e-10, with ``fast=True`` and ``fast=False``.
* ``fast=True`` (``linear_scan``) equals ``fast=False`` (loop) in float64 to 1e-10, outputs and
  every parameter gradient, at L=7 and L=1000, also with saturating gates.
* ``count_params() == n_params(...)``; f' + i' = 1; g > 0 and continuous at 0.
"""
import math

import numpy as np
import pytest
import torch

from bench.models import MODELS, build_model
from bench.models.mingru import g
from bench.models.minlstm import normalised_gates
from bench.optim import known_optimizers

from helpers import assert_close as _close   # tests/helpers.py

NAMES = ("mingru", "minlstm")


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


# ---- the NumPy transcription of the paper's sequential mode -------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _g(x):
    # App. B, Listing 6: x + 0.5 for x >= 0, sigmoid(x) below
    return np.where(x >= 0, x + 0.5, _sigmoid(x))


def numpy_reference(name, P, x):
    """y (B, L, p) of one layer plus readout, step by step; P holds the model's parameters."""
    B, L, _ = x.shape
    n = P["linear_h.bias"].shape[0]

    def lin(key, xt):
        return xt @ P[f"{key}.weight"].T + P[f"{key}.bias"]

    h = np.tile(_g(P["h0"]), (B, 1)) if "h0" in P else np.zeros((B, n))
    y = np.empty((B, L, P["readout.bias"].shape[0]))
    for t in range(L):
        xt = x[:, t]
        h_tilde = _g(lin("linear_h", xt))
        if name == "mingru":                      # Algorithm 5
            z = _sigmoid(lin("linear_z", xt))
            h = (1 - z) * h + z * h_tilde
        else:                                     # Algorithm 7
            f, i = _sigmoid(lin("linear_f", xt)), _sigmoid(lin("linear_i", xt))
            h = f / (f + i) * h + i / (f + i) * h_tilde
        y[:, t] = h @ P["readout.weight"].T + P["readout.bias"]
    return y


def _model(name, m, p, n, seed, **opts):
    torch.manual_seed(seed)
    model = build_model(name, m, p, n, **opts).double()
    with torch.no_grad():         # off the init: nonzero readout bias, varied gate biases
        for pname, q in model.named_parameters():
            if pname.endswith("bias"):
                q.add_(0.5 * torch.randn_like(q))
    return model


@pytest.mark.parametrize("learn_h0", [True, False])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_model_equals_numpy_transcription_of_the_paper(name, fast, learn_h0):
    B, L, m, p, n = 2, 7, 3, 2, 5
    model = _model(name, m, p, n, seed=1, learn_h0=learn_h0, fast=fast)
    x = torch.randn(B, L, m, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    P = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    assert ("h0" in P) == learn_h0
    pre = x.numpy() @ P["linear_h.weight"].T + P["linear_h.bias"]
    assert (pre > 0).any() and (pre < 0).any()              # both branches of g are exercised
    with torch.no_grad():
        got = model(x).numpy()
    _close(got, numpy_reference(name, P, x.numpy()), f"{name} fast={fast} learn_h0={learn_h0}")


# ---- parallel (linear_scan) == sequential loop, outputs and gradients ---------------------------
def _output_and_grads(model, x, grad_out):
    model.zero_grad()
    y = model(x)
    (y * grad_out).sum().backward()
    return y.detach(), {k: q.grad.clone() for k, q in model.named_parameters()}


@pytest.mark.parametrize("L,saturate", [(7, 1.0), (1000, 1.0), (1000, 6.0)])
@pytest.mark.parametrize("name", NAMES)
def test_fast_equals_sequential_outputs_and_gradients(name, L, saturate):
    B, m, p, n = 2, 3, 2, 8
    fast = _model(name, m, p, n, seed=3)
    with torch.no_grad():         # saturate > 1: decays a_t near 0 and near 1
        for lin in fast.linears:
            getattr(fast, lin).weight.mul_(saturate)
    slow = build_model(name, m, p, n, fast=False).double()
    slow.load_state_dict(fast.state_dict())
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(B, L, m, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(B, L, p, generator=gen, dtype=torch.float64)
    if saturate > 1:
        a = fast.coefficients(x)[0]
        assert (a < 1e-4).any() and (a > 1 - 1e-4).any()
    y_fast, g_fast = _output_and_grads(fast, x, grad_out)
    y_slow, g_slow = _output_and_grads(slow, x, grad_out)
    _close(y_fast, y_slow, f"{name} L={L} output")
    assert set(g_fast) == {k for k, _ in fast.named_parameters()} == set(g_slow)
    for k in g_fast:
        _close(g_fast[k], g_slow[k], f"{name} L={L} d/d{k}")


# ---- counts, registration, options --------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n,m,p", [(1, 1, 1), (4, 1, 10), (8, 10, 9), (16, 2, 1), (7, 129, 129)])
def test_count_params_equals_n_params(name, n, m, p):
    cls = MODELS[name]
    k = len(cls.linears)
    for learn_h0 in (True, False):
        model = build_model(name, m, p, n, learn_h0=learn_h0)
        want = k * n * (m + 1) + (n if learn_h0 else 0) + n * p + p
        assert model.count_params() == cls.n_params(n, m, p, learn_h0=learn_h0) == want
        assert cls.param_count(n, m, p, **cls.options()) == cls.n_params(n, m, p)   # fast etc. ignored
        assert model.count_params() == sum(q.numel() for q in model.param_groups()["other"])


def test_registration_defaults_and_init():
    assert MODELS["mingru"].linears == ("linear_z", "linear_h")
    assert MODELS["minlstm"].linears == ("linear_f", "linear_i", "linear_h")
    for name in NAMES:
        cls = MODELS[name]
        assert cls.name == name and cls.description and "2410.01201" in cls.paper
        assert cls.default_opts == {"other": ("adam", 3e-4)} and "adam" in known_optimizers()
        assert cls.optimizer_semantics == {"*": "torch"} and cls.groups == ("other",)
        assert cls.options()["fast"] is True and cls.options()["learn_h0"] is True
    torch.manual_seed(7)
    m = 4
    model = build_model("minlstm", m, 2, 32)
    bound = 1 / math.sqrt(m)                       # nn.Linear's default, plus the forget bias
    assert ((model.linear_f.bias - 3.0).abs() <= bound).all()
    assert (model.linear_i.bias.abs() <= bound).all() and (model.linear_h.weight.abs() <= bound).all()
    assert (build_model("minlstm", m, 2, 32, forget_bias=0.0).linear_f.bias.abs() <= bound).all()


# ---- the gates and g ----------------------------------------------------------------------------
def test_minlstm_normalised_gates_are_the_quotients_and_sum_to_one():
    k = torch.tensor([-60.0, -20.0, -3.0, -1e-3, 0.0, 1e-3, 2.0, 15.0, 60.0], dtype=torch.float64)
    k_f, k_i = torch.meshgrid(k, k, indexing="ij")
    f_, i_ = normalised_gates(k_f, k_i)
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)            # Algorithm 7 as written
    torch.testing.assert_close(f_, f / (f + i), rtol=1e-14, atol=0)
    torch.testing.assert_close(i_, i / (f + i), rtol=1e-14, atol=0)
    torch.testing.assert_close(f_ + i_, torch.ones_like(f_), rtol=0, atol=4e-16)
    # where sigmoid underflows, the quotient is 0/0; the normalised gates stay defined
    far = torch.tensor([-800.0, -900.0], dtype=torch.float64)
    f_, i_ = normalised_gates(far[:1], far[1:])
    assert torch.isfinite(f_).all() and torch.isfinite(i_).all() and (f_ + i_).item() == 1.0
    assert f_.item() > 0.999                                   # e^-800 >> e^-900: nearly all forget


def test_g_is_positive_and_continuous_at_zero():
    x = torch.cat([-torch.logspace(-12, math.log10(700), 400, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                   torch.logspace(-12, 6, 400, dtype=torch.float64)])
    assert (g(x) > 0).all()                   # float64's sigmoid underflows only below -745
    assert g(torch.tensor(0.0, dtype=torch.float64)).item() == 0.5
    for d in (1e-3, 1e-8, 1e-12):             # both one-sided limits are 0.5: |g(+-d) - 0.5| <= d
        for x0 in (d, -d):
            assert abs(g(torch.tensor(x0, dtype=torch.float64)).item() - 0.5) <= d + 1e-16   # + rounding of 0.5 + d
    # the kink: slope 1 on the right, sigmoid'(0) = 1/4 on the left
    x0 = torch.tensor([1e-9, -1e-9], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(g(x0).sum(), x0)
    torch.testing.assert_close(slope, torch.tensor([1.0, 0.25], dtype=torch.float64))

"""dtriv (models/dtriv.py) and nnRNN (models/nnrnn.py) against independent NumPy computations.

dtriv:
* W = B expm(A), with expm computed here in NumPy (scaling and squaring of a Taylor series; SciPy
  is not a dependency of the harness), to 1e-10 in float64, real (A skew-symmetric) and complex
  (A skew-Hermitian from its n² reals).
* The rebase: after steps 1, K+1, 2K+1, ... (K=3 here) ``post_step`` moves the base to
  B expm(A), sets A to 0 and leaves W unchanged (1e-10, float64); in between the base does not
  move. The optimizer's state for A is kept, as the reference keeps it. The base is projected
  onto the group every M-th rebase. K="inf" rebases once; K=0 never, and is then exprnn.
* W stays orthogonal/unitary to 1e-5 over 100 float32 training steps with rebasing every 10.

nnRNN:
* W = P (Λ + T) Pᵀ built here from the parameters (P = expm(A), Λ's 2x2 blocks, T's entries
  written out one by one), 1e-10 in float64; T strictly upper triangular; W's eigenvalues are
  Λ's α e^{±iθ} (``block_triangular=True``), or those of the 2x2 diagonal blocks of Λ + T (the
  reference's mask, which frees T inside the blocks).
* The forward pass equals a NumPy loop of the reference's recurrence (RNN_Cell.py
  ``OrthoRNNCell.forward``, expRNN's ``modrelu``) in float64 to 1e-10, fast and plain loops.
* The reference's hand-made gradient of log P (``orthogonal_step``: B expm_frechet(-A, skew(BᵀG)))
  equals autograd's; the δ and T-decay penalties add exactly their gradients.

Both: ``count_params() == n_params(...)`` over sizes and options; groups cover every trainable
tensor once. The file runs in a few seconds on one core.
"""
import math

import numpy as np
import pytest
import torch

from bench.errors import ConfigError, InvalidHiddenSizeError, UnknownNameError
from bench.models import build_model, get_model_class
from bench.optim import known_optimizers

from helpers import assert_close as _close   # tests/helpers.py


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def expm(M: np.ndarray) -> np.ndarray:
    """exp(M) by scaling and squaring: a 30-term Taylor series on M / 2^s with |M / 2^s|_1 <= 1/4."""
    M = np.asarray(M)
    norm = np.abs(M).sum(axis=0).max()
    s = max(0, int(math.ceil(math.log2(norm / 0.25)))) if norm > 0 else 0
    X = M / 2.0 ** s
    E = term = np.eye(M.shape[0], dtype=M.dtype)
    for k in range(1, 30):
        term = term @ X / k
        E = E + term
    for _ in range(s):
        E = E @ E
    return E


def skew_from_upper(free: np.ndarray, n: int) -> np.ndarray:
    S = np.zeros((n, n))
    k = 0
    for i in range(n):
        for j in range(i + 1, n):
            S[i, j], S[j, i] = free[k], -free[k]
            k += 1
    return S


def hermitian_imag(free: np.ndarray, n: int) -> np.ndarray:
    """The symmetric T of A = S + iT from its upper triangle with diagonal, row by row."""
    T = np.zeros((n, n))
    k = 0
    for i in range(n):
        for j in range(i, n):
            T[i, j] = T[j, i] = free[k]
            k += 1
    return T


def random_orthogonal(n: int, rng, complex_: bool = False) -> np.ndarray:
    Z = rng.standard_normal((n, n)) + (1j * rng.standard_normal((n, n)) if complex_ else 0)
    Q, R = np.linalg.qr(Z)
    return Q * (np.diag(R) / np.abs(np.diag(R)))


# ---- dtriv ----------------------------------------------------------------------------------
def _dtriv64(n=6, seed=0, **opts):
    torch.manual_seed(seed)
    return build_model("dtriv", 3, 2, n, **opts).double()


def _dtriv_log(model) -> np.ndarray:
    n = model.n_hidden
    if model.complex:
        return skew_from_upper(_np(model.A_re), n) + 1j * hermitian_imag(_np(model.A_im), n)
    return skew_from_upper(_np(model.A), n)


def _dtriv_base(model) -> np.ndarray:
    b = _np(model.base)
    return b[..., 0] + 1j * b[..., 1] if model.complex else b


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_dtriv_matrix_is_base_times_expm(complex_):
    n = 6
    model = _dtriv64(n, complex=complex_)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for p in model.param_groups()["A"]:
            p.copy_(torch.from_numpy(rng.standard_normal(p.shape)))
        B = random_orthogonal(n, rng, complex_)
        model.base.copy_(torch.from_numpy(np.stack([B.real, B.imag], -1) if complex_ else B))
    A = _dtriv_log(model)
    assert np.abs(A + A.conj().T).max() == 0                               # skew-symmetric / skew-Hermitian
    assert model.count_params() == (n * n if complex_ else n * (n - 1) // 2) + sum(
        q.numel() for q in model.param_groups()["other"])
    W = model.recurrent_matrix().detach().numpy()
    _close(W, B @ expm(A), "W = B expm(A)")
    _close(W.conj().T @ W, np.eye(n), "WᴴW = I")
    assert model.unitarity_error() < 1e-12


def _train(model, steps, *, lr=1e-2, each=None, seed=0):
    torch.manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x, y = torch.randn(4, 6, model.d_input, dtype=dtype), torch.randn(4, 6, model.d_output, dtype=dtype)
    groups = model.param_groups()
    opt = torch.optim.RMSprop([{"params": groups["A"], "lr": lr / 10}, {"params": groups["other"], "lr": lr}])
    for step in range(1, steps + 1):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        before = (_dtriv_base(model), _dtriv_log(model), model.recurrent_matrix().detach().numpy(),
                  [opt.state[p]["square_avg"].clone() for p in groups["A"]])
        model.post_step()
        if each:
            each(step, before, opt)
    return opt


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_dtriv_rebases_after_steps_1_and_every_K_more_keeping_W(complex_):
    K = 3
    model = _dtriv64(complex=complex_, K=K, M=0)
    rebased = []

    def each(step, before, opt):
        B0, A0, W0, state0 = before
        B1, A1 = _dtriv_base(model), _dtriv_log(model)
        W1 = model.recurrent_matrix().detach().numpy()
        _close(W1, W0, f"W across post_step {step}")                        # the rebase keeps W
        if np.array_equal(B1, B0):
            assert np.abs(A1).max() > 0 and np.array_equal(A1, A0), step
        else:
            rebased.append(step)
            assert np.abs(A1).max() == 0, step                              # A <- 0
            _close(B1, B0 @ expm(A0), f"B <- B expm(A) at step {step}")
        for p, s in zip(model.param_groups()["A"], state0):                # optimizer state kept
            assert torch.equal(opt.state[p]["square_avg"], s)

    _train(model, 8, each=each)
    assert rebased == [1, 4, 7]
    assert model.rebases == 3 and model.steps == 8
    # the counters travel with the state dict (a resumed run keeps its schedule)
    other = _dtriv64(complex=complex_, K=K, M=0, seed=1)
    other.load_state_dict(model.state_dict())
    assert (other.steps, other.rebases) == (8, 3)
    _close(other.recurrent_matrix().detach().numpy(), model.recurrent_matrix().detach().numpy(), "loaded W", 0)


def test_dtriv_projects_the_base_every_M_rebases():
    model = _dtriv64(K=1, M=2)
    rng = np.random.default_rng(2)
    drift = 1e-6 * rng.standard_normal((6, 6))
    errors = []
    for step in (1, 2, 3, 4):
        with torch.no_grad():
            model.base.add_(torch.from_numpy(drift))                       # simulated float32 drift
        want = _dtriv_base(model) @ expm(_dtriv_log(model))                # B expm(A) before the rebase
        model.post_step()                                                  # K=1: rebase every step
        B = _dtriv_base(model)
        errors.append(np.abs(B.T @ B - np.eye(6)).max())
        if model.rebases % 2:
            _close(B, want, f"no projection at rebase {model.rebases}")
        else:                                                              # its polar factor U Vᵀ
            U, _, Vh = np.linalg.svd(want)
            _close(B, U @ Vh, f"projection at rebase {model.rebases}")
    assert errors[0] > 1e-7 and errors[1] < 1e-13 and errors[2] > 1e-7 and errors[3] < 1e-13, errors


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_dtriv_stays_unitary_over_100_float32_steps_with_rebasing(complex_):
    torch.manual_seed(5)
    model = build_model("dtriv", 3, 2, 16, complex=complex_, K=10)
    A0 = [p.detach().clone() for p in model.param_groups()["A"]]
    _train(model, 100)
    assert model.rebases == 10                                             # after steps 1, 11, ..., 91
    assert any(not torch.equal(p, a) for p, a in zip(model.param_groups()["A"], A0))
    assert model.unitarity_error() < 1e-5


def test_dtriv_K0_never_rebases_and_is_exprnn():
    torch.manual_seed(3)
    exp = build_model("exprnn", 3, 2, 6).double()
    torch.manual_seed(3)
    dt = build_model("dtriv", 3, 2, 6, K=0).double()                      # same draws in the same order
    for (ka, a), (kb, b) in zip(exp.named_parameters(), dt.named_parameters()):
        assert ka == kb and torch.equal(a, b), ka
    seen = []
    _train(dt, 6, each=lambda step, before, opt: seen.append(np.array_equal(_dtriv_base(dt), np.eye(6))))
    assert all(seen) and dt.rebases == 0 and np.abs(_dtriv_log(dt)).max() > 0
    exp.load_state_dict({k: v for k, v in dt.state_dict().items() if k in exp.state_dict()})   # A, U, bias, readout
    _close(dt.recurrent_matrix().detach().numpy(), exp.recurrent_matrix().detach().numpy(), "K=0 W vs exprnn W", 0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    _close(_np(dt(x)), _np(exp(x)), "K=0 forward vs exprnn forward", 0)


@pytest.mark.parametrize("K", ["inf", "infty", math.inf])
def test_dtriv_K_inf_rebases_once_after_the_first_step(K):
    model = _dtriv64(K=K)
    moved = []
    _train(model, 6, each=lambda step, before, opt: moved.append(not np.array_equal(_dtriv_base(model), before[0])))
    assert moved == [True, False, False, False, False, False]
    assert model.rebases == 1


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_dtriv_fast_equals_plain(complex_):
    fast = _dtriv64(complex=complex_, fast=True)
    plain = _dtriv64(complex=complex_, fast=False)
    plain.load_state_dict(fast.state_dict())
    x, w = torch.randn(3, 7, 3, dtype=torch.float64), torch.randn(3, 7, 2, dtype=torch.float64)
    outs = []
    for model in (fast, plain):
        out = model(x)
        (out * w).sum().backward()
        outs.append(_np(out))
    _close(outs[0], outs[1], "output")
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        _close(_np(a.grad), _np(b.grad), f"d{name}")


@pytest.mark.parametrize("options,message", [
    ({"K": -1}, r"dtriv: K must be an integer >= 0 .*got -1"),
    ({"K": "forever"}, r"dtriv: K must be .*got 'forever'"),
    ({"K": 2.5}, r"dtriv: K must be .*got 2.5"),
    ({"M": -3}, r"dtriv: M .* must be an integer >= 0 \(0: never project\), got -3"),
    ({"complex": "yes"}, r"dtriv: option complex must be true or false, got 'yes'"),
])
def test_dtriv_bad_options_name_the_value(options, message):
    with pytest.raises(ConfigError, match=message):
        build_model("dtriv", 2, 1, 4, **options)
    with pytest.raises(UnknownNameError, match=r"dtriv: unknown init 'qr'; known inits: henaff, cayley"):
        get_model_class("dtriv").check_hidden(4, init="qr")


# ---- nnRNN ----------------------------------------------------------------------------------
def _nnrnn64(n=6, seed=0, randomise=True, **opts):
    torch.manual_seed(seed)
    model = build_model("nnrnn", 3, 2, n, **opts).double()
    if randomise:                               # move α off 1 and T off 0 (their initial values)
        g = torch.Generator().manual_seed(seed + 10)
        with torch.no_grad():
            model.T.copy_(0.3 * torch.randn(model.T.shape, generator=g, dtype=torch.float64))
            model.alpha.copy_(0.8 + 0.4 * torch.rand(model.alpha.shape, generator=g, dtype=torch.float64))
            model.log_P.add_(0.2 * torch.randn(model.log_P.shape, generator=g, dtype=torch.float64))
            if hasattr(model, "bias"):
                model.bias.copy_(torch.linspace(-0.5, 0.2, n, dtype=torch.float64))
    return model


def _schur_numpy(model) -> tuple[np.ndarray, np.ndarray]:
    """(Λ, T) written out entry by entry from α, θ and T's free entries."""
    n = model.n_hidden
    alpha, theta, t = _np(model.alpha), _np(model.theta), _np(model.T)
    Lam, T = np.zeros((n, n)), np.zeros((n, n))
    for k in range(n // 2):
        c, s = math.cos(theta[k]), math.sin(theta[k])
        Lam[2 * k:2 * k + 2, 2 * k:2 * k + 2] = alpha[k] * np.array([[c, -s], [s, c]])
    m = 0
    for i in range(n):
        for j in range(i + 1, n):
            if model.block_triangular and i % 2 == 0 and j == i + 1:
                continue
            T[i, j] = t[m]
            m += 1
    assert m == t.size
    return Lam, T


@pytest.mark.parametrize("block_triangular", [False, True], ids=["reference-mask", "block-triangular"])
def test_nnrnn_matrix_is_P_schur_Pt_and_its_eigenvalues(block_triangular):
    n = 6
    model = _nnrnn64(n, block_triangular=block_triangular)
    P = expm(skew_from_upper(_np(model.log_P), n))
    Lam, T = _schur_numpy(model)
    W = model.recurrent_matrix().detach().numpy()
    _close(P.T @ P, np.eye(n), "PᵀP = I")
    _close(W, P @ (Lam + T) @ P.T, "W = P (Λ + T) Pᵀ")
    S = model.schur_factor().detach().numpy()
    _close(S, Lam + T, "Λ + T")
    assert np.all(np.tril(T) == 0) and np.abs(T).max() > 0                  # T strictly upper triangular
    eig = np.sort_complex(np.linalg.eigvals(W))
    blocks = np.sort_complex(np.concatenate([np.linalg.eigvals((Lam + T)[k:k + 2, k:k + 2]) for k in range(0, n, 2)]))
    _close(eig, blocks, "eig W = eig of the diagonal 2x2 blocks of Λ + T", 1e-8)
    lam = np.sort_complex(np.concatenate([_np(model.alpha) * np.exp(s * 1j * _np(model.theta)) for s in (1, -1)]))
    if block_triangular:
        assert all(T[k, k + 1] == 0 for k in range(0, n, 2))
        _close(eig, lam, "eig W = α e^{±iθ}", 1e-8)
    else:                                      # the reference's mask moves them off Λ's
        assert np.abs(eig - lam).max() > 1e-3
    fresh = _nnrnn64(n, randomise=False, block_triangular=block_triangular)
    _close(np.sort_complex(np.linalg.eigvals(fresh.recurrent_matrix().detach().numpy())),
           np.sort_complex(np.exp(np.concatenate([1j * _np(fresh.theta), -1j * _np(fresh.theta)]))),
           "eig W at init = e^{±iθ}", 1e-8)
    assert model.unitarity_error() is None                                  # not orthogonal by design


def _reference_forward(model, x: np.ndarray) -> np.ndarray:
    """RNN_Cell.py OrthoRNNCell.forward step by step: h = σ(U(x) + h rec), h0 = 0, then the readout."""
    Lam, T = _schur_numpy(model)
    P = expm(skew_from_upper(_np(model.log_P), model.n_hidden))
    rec = P @ (Lam + T) @ P.T
    U, Wout, bout = _np(model.U), _np(model.readout.weight), _np(model.readout.bias)
    h = np.zeros((x.shape[0], model.n_hidden))
    ys = []
    for t in range(x.shape[1]):
        z = x[:, t] @ U + h @ rec
        if model.nonlin == "modrelu":          # expRNN's modrelu: sign(z) relu(|z| + b)
            h = np.sign(z) * np.maximum(np.abs(z) + _np(model.bias), 0.0)
        else:
            h = np.tanh(z)
        ys.append(h @ Wout.T + bout)
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("nonlin", ["modrelu", "tanh"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_nnrnn_forward_equals_numpy_loop_of_the_reference(nonlin, fast):
    model = _nnrnn64(6, nonlin=nonlin, fast=fast)
    x = np.random.default_rng(4).standard_normal((3, 9, 3))
    with torch.no_grad():
        got = _np(model(torch.from_numpy(x)))
    _close(got, _reference_forward(model, x), f"{nonlin} forward ({'fast' if fast else 'plain'})")


def test_nnrnn_log_P_gradient_is_the_references_orthogonal_step():
    """RNN_Cell.py orthogonal_step: grad = ½(BᵀG - GᵀB), F = B expm_frechet(-A, grad),
    log_P.grad = triu(F - Fᵀ, 1), with G = dL/dP; the Fréchet derivative from the block expm."""
    n = 6
    model = _nnrnn64(n)
    C = np.random.default_rng(5).standard_normal((n, n))
    loss = (model.orthogonal_factor() * torch.from_numpy(C)).sum()          # dL/dP = C
    loss.backward()
    A = skew_from_upper(_np(model.log_P), n)
    B = expm(A)
    BtG = B.T @ C
    grad = 0.5 * (BtG - BtG.T)
    big = np.block([[-A, grad], [np.zeros((n, n)), -A]])
    F = B @ expm(big)[:n, n:]
    want = np.triu(F - F.T, 1)[np.triu_indices(n, 1)]
    _close(_np(model.log_P.grad), want, "d log_P (autograd vs orthogonal_step)")


def test_nnrnn_penalties_add_exactly_their_gradients():
    delta, decay = 0.3, 0.05
    plain = _nnrnn64(6, delta=0.0, T_decay=0.0)
    pen = _nnrnn64(6, delta=delta, T_decay=decay)
    x, y = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64)
    for model in (plain, pen):
        ((model(x) - y) ** 2).mean().backward()
    # alpha_loss = δ Σ MSE(α_k, 1) added to the loss; RMSprop weight_decay adds λ T to T's gradient
    _close(_np(pen.alpha.grad), _np(plain.alpha.grad) + 2 * delta * (_np(pen.alpha) - 1), "dα")
    _close(_np(pen.T.grad), _np(plain.T.grad) + decay * _np(pen.T), "dT")
    for (name, a), b in zip(pen.named_parameters(), plain.parameters()):
        if name not in ("alpha", "T"):
            assert torch.equal(a.grad, b.grad), name
    with torch.no_grad():                                                   # no graph, nothing added
        torch.testing.assert_close(pen(x), plain(x), rtol=0, atol=0)


def test_nnrnn_bad_sizes_and_options():
    with pytest.raises(InvalidHiddenSizeError, match=r"^nnrnn: hidden size must be even \(Λ is made of 2x2 rotation "
                                                     r"blocks\), got n=7; try 6 or 8$"):
        build_model("nnrnn", 2, 1, 7)
    with pytest.raises(UnknownNameError, match=r"nnrnn: unknown nonlin 'relu'; known nonlinearities: modrelu, tanh"):
        build_model("nnrnn", 2, 1, 8, nonlin="relu")
    with pytest.raises(ConfigError, match=r"nnrnn: delta must be a finite number >= 0, got -1"):
        build_model("nnrnn", 2, 1, 8, delta=-1)


# ---- both: counts, groups, defaults ----------------------------------------------------------
COUNT_CASES = [
    ("dtriv", {}), ("dtriv", {"complex": True}), ("dtriv", {"K": 0}), ("dtriv", {"K": "inf", "init": "cayley"}),
    ("nnrnn", {}), ("nnrnn", {"nonlin": "tanh"}), ("nnrnn", {"block_triangular": True}),
    ("nnrnn", {"nonlin": "tanh", "block_triangular": True, "init": "cayley"}),
]


@pytest.mark.parametrize("name,opts", COUNT_CASES)
@pytest.mark.parametrize("n,m,p", [(4, 1, 10), (8, 10, 9), (16, 2, 1), (6, 3, 5)])
def test_count_params_equals_formula_and_groups_cover_each_tensor_once(name, opts, n, m, p):
    cls = get_model_class(name)
    model = build_model(name, m, p, n, **opts)
    assert model.count_params() == cls.param_count(n, m, p, **opts)
    grouped = [id(q) for ps in model.param_groups().values() for q in ps]
    assert set(model.param_groups()) == set(cls.groups)
    assert sorted(grouped) == sorted(id(q) for q in model.parameters() if q.requires_grad)
    assert set(cls.default_opts) == set(cls.groups) and all(o in known_optimizers() for o, _ in cls.default_opts.values())


def test_formulas_at_paper_sizes():
    dtriv, nnrnn = get_model_class("dtriv"), get_model_class("nnrnn")
    assert dtriv.n_params(170, 1, 10) == get_model_class("exprnn").n_params(170, 1, 10) == 16_415   # n=170: expRNN
    # unitary: n² + 3n + 2n(m + p) + p, the full-capacity uRNN's count (16,366 at n=116)
    assert dtriv.n_params(116, 1, 10, complex=True) == get_model_class("fcurnn").n_params(116, 1, 10) == 16_366
    # nnRNN copy task, n=128, 10 inputs (one-hot labels + 2), 9 outputs: n² + n + n(m + p) + p
    assert nnrnn.n_params(128, 10, 9) == 128 * 128 + 128 + 128 * 19 + 9

"""Every registered model: parameter counts, paper budgets, unitarity, gradients, errors, training.

Each test loops over every registered model (STYLE.md #7); ``CASES`` must name them all, so a
new model without cases fails ``test_every_registered_model_has_cases``.
"""
import math
import re

import pytest
import torch

from bench.config import RunConfig, resolve
from bench.models import MODELS, build_model, get_model_class
from bench.errors import ConfigError, InvalidHiddenSizeError, UnknownNameError
from bench.optim import CayleyStep, GroupOptimizer, known_optimizers
from bench.paper import PAPER_SETTINGS

# model -> option sets to cover (each option set is tested wherever the model is)
CASES = {
    "lstm": [{}, {"forget_bias": -4.0}],
    "gru": [{}],
    "scornn": [{}, {"rho": 1}],
    "urnn": [{}, {"dense": False}],
    "fcurnn": [{}, {"init": "haar"}],
    "eurnn": [{}, {"style": "fft"}, {"complex": False, "capacity": 4}, {"readout": "reim"},
              {"style": "fft", "complex": False}, {"dense": False}, {"style": "fft", "dense": False},
              {"complex": False, "capacity": 4, "dense": False}],
    "ornn": [{}, {"k": 3}],
    "exprnn": [{}, {"init": "cayley"}],
    "scurnn": [{}],
    "lru": [{}, {"d_state": 16}, {"r_min": 0.9, "max_phase": 0.628}],
    "s4d": [{}, {"d_state": 16}, {"dt_min": 1e-2, "dt_max": 1.0}],
    "mingru": [{}, {"learn_h0": False}],
    "minlstm": [{}, {"learn_h0": False}, {"forget_bias": 0.0}],
    "dtriv": [{}, {"complex": True}, {"K": 0}, {"K": "inf"}, {"K": 1, "init": "cayley"}],
    "nnrnn": [{}, {"nonlin": "tanh"}, {"block_triangular": True}, {"init": "cayley"}],
}
ALL = [(name, opts) for name in sorted(CASES) for opts in CASES[name]]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in ALL]
# (m, p) of the paper's tasks (paper §5); checked against the task registry where registered
TASK_DIMS = {"mnist": (1, 10), "pmnist": (1, 10), "copying": (10, 9), "adding": (2, 1), "timit": (129, 129)}


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_every_registered_model_has_cases():
    assert set(CASES) == set(MODELS)
    for name, cls in MODELS.items():
        assert cls.description and cls.paper, name
        assert set(cls.default_opts) <= set(cls.groups), name
        for opt, _ in cls.default_opts.values():
            assert opt in known_optimizers()


# ---- parameter counts ---------------------------------------------------------------------
@pytest.mark.parametrize("name,opts", ALL, ids=IDS)
@pytest.mark.parametrize("n,m,p", [(4, 1, 10), (8, 10, 9), (16, 2, 1), (8, 3, 5)])
def test_formula_equals_counted_scalars(name, opts, n, m, p):
    cls = get_model_class(name)
    model = build_model(name, m, p, n, **opts)
    assert model.count_params() == cls.param_count(n, m, p, **opts)
    # where storage exceeds the degrees of freedom, by exactly the documented amount
    stored = sum(q.numel() for q in model.parameters() if q.requires_grad)
    extra = {"gru": 2 * n, "fcurnn": n * n}.get(name, 0)
    assert stored == cls.param_count(n, m, p, **opts) + extra
    # every trainable parameter in exactly one declared group
    groups = model.param_groups()
    assert set(groups) <= set(cls.groups)
    grouped = [id(q) for ps in groups.values() for q in ps]
    assert sorted(grouped) == sorted(id(q) for q in model.parameters() if q.requires_grad)


# counts worked out by hand from each model's formula at the paper's sizes: (model, options, task, n, P)
CHECKED = [
    ("scornn", {}, "mnist", 170, 16_415), ("scornn", {}, "mnist", 360, 68_950), ("scornn", {}, "mnist", 512, 136_970),
    ("exprnn", {}, "mnist", 170, 16_415), ("exprnn", {}, "mnist", 360, 68_950), ("exprnn", {}, "mnist", 512, 136_970),
    ("urnn", {}, "mnist", 512, 16_394), ("fcurnn", {}, "mnist", 116, 16_366), ("fcurnn", {}, "mnist", 512, 274_954),
    ("lstm", {}, "mnist", 128, 67_850), ("lstm", {}, "mnist", 256, 266_762), ("lstm", {}, "mnist", 512, 1_057_802),
    ("ornn", {"k": 32}, "mnist", 256, 11_034), ("ornn", {"k": 16}, "mnist", 256, 7_314),
    ("eurnn", {"capacity": 2}, "mnist", 512, 8_200), ("eurnn", {"capacity": 4}, "mnist", 512, 9_222),
    ("eurnn", {"complex": False, "capacity": 2}, "mnist", 1024, 13_321),
    ("scornn", {}, "timit", 224, 83_121), ("scornn", {}, "timit", 322, 135_208), ("scornn", {}, "timit", 425, 200_304),
    ("fcurnn", {}, "timit", 128, 82_945), ("fcurnn", {}, "timit", 192, 136_641), ("fcurnn", {}, "timit", 256, 198_529),
    ("urnn", {}, "timit", 128, 67_457), ("urnn", {}, "timit", 158, 83_237), ("urnn", {}, "timit", 256, 134_785),
    ("urnn", {}, "timit", 378, 198_957),
    ("lstm", {}, "timit", 84, 82_869), ("lstm", {}, "timit", 120, 135_609), ("lstm", {}, "timit", 156, 198_717),
    ("lstm", {}, "timit", 158, 202_527),
    ("scornn", {}, "copying", 190, 21_764), ("fcurnn", {}, "copying", 128, 21_641), ("urnn", {}, "copying", 470, 22_569),
    ("lstm", {}, "copying", 68, 22_109), ("eurnn", {"capacity": 2, "readout": "reim"}, "copying", 512, 21_511),
    ("eurnn", {"capacity": 2}, "copying", 512, 16_903),
    ("scornn", {}, "adding", 170, 15_046), ("lstm", {}, "adding", 60, 15_181), ("fcurnn", {}, "adding", 120, 15_481),
    ("urnn", {}, "adding", 950, 15_201), ("ornn", {"k": 16}, "adding", 128, 2_569),
]


@pytest.mark.parametrize("name,opts,task,n,expected", CHECKED)
def test_counts_worked_out_by_hand(name, opts, task, n, expected):
    assert get_model_class(name).param_count(n, *TASK_DIMS[task], **opts) == expected


def _budget(text: str) -> float:
    m = re.fullmatch(r"≈([0-9.]+)k", text)
    assert m, text
    return float(m.group(1)) * 1000


def test_paper_sizes_reproduce_paper_budgets():
    """Every paper row: its size, with its options, gives the printed budget within 5%.

    Exception: the adding problem's "≈14k" (§5.3) is loose in the paper itself; its sizes give
    14.4k (scuRNN) to 15.5k (full uRNN n=120), so those rows are held to 11%.
    """
    from bench.tasks import TASKS

    for task, dims in TASK_DIMS.items():
        if task in TASKS:
            t = TASKS[task]()
            assert (t.d_input, t.d_output) == dims
    checked = 0
    for row in PAPER_SETTINGS:
        cls = get_model_class(row.model)
        cls.check_hidden(row.n_hidden, **row.options)
        assert set(row.opts) <= set(cls.groups), row
        assert all(opt in known_optimizers() for opt, _ in row.opts.values()), row
        if row.budget is None:
            continue
        count = cls.param_count(row.n_hidden, *TASK_DIMS[row.task], **row.options)
        tol = 0.11 if (row.task, row.budget) == ("adding", "≈14k") else 0.05
        assert abs(count - _budget(row.budget)) <= tol * _budget(row.budget), (row.model, row.task, row.n_hidden, count)
        checked += 1
    assert checked >= 40
    assert {r.model for r in PAPER_SETTINGS} >= {"lstm", "scornn", "urnn", "fcurnn", "eurnn", "ornn", "scurnn"}


@pytest.mark.parametrize("name,opts", ALL, ids=IDS)
def test_hidden_for_budget_respects_constraints(name, opts):
    cls = get_model_class(name)
    for m, p in ((1, 10), (10, 9)):
        n = cls.hidden_for_budget(22_000, m, p, **opts)
        cls.check_hidden(n, **opts)
        count = cls.param_count(n, m, p, **opts)
        # no valid size is closer to the budget
        for other in range(max(1, n // 2), 2 * n + 1):
            try:
                cls.check_hidden(other, **opts)
            except InvalidHiddenSizeError:
                continue
            assert abs(cls.param_count(other, m, p, **opts) - 22_000) >= abs(count - 22_000)
    if opts.get("style") == "fft":
        assert n & (n - 1) == 0


def test_params_command_table(capsys):
    from bench.cli import main

    assert main(["params", "--task", "copying", "--params", "22k"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line and not line.startswith(" ")}
    assert set(lines) == set(MODELS)
    assert lines["lstm"][:5] == ["lstm", "68", "22,109", "68", "22,109"]      # paper's size is the closest
    assert lines["scornn"][3:5] == ["190", "21,764"]
    assert main(["params", "--task", "copying", "--model", "eurnn", "--model-opt", "style=fft"]) == 0
    assert "eurnn      512" in capsys.readouterr().out


# ---- structure of the recurrent matrices ----------------------------------------------------
def test_urnn_matrix_is_the_product_of_its_factors():
    from bench.models.urnn import restricted_unitary

    torch.manual_seed(0)
    n = 6
    model = build_model("urnn", 2, 1, n).double()
    theta, refl, perm = model.theta, model.reflections, model.perm
    D = [torch.diag(torch.exp(1j * theta[k])) for k in range(3)]
    F = torch.fft.fft(torch.eye(n, dtype=torch.complex128), norm="ortho")      # F x = fft(x)
    Finv = F.conj().T
    R = []
    for k in range(2):
        v = torch.complex(refl[k, :n], refl[k, n:]).unsqueeze(1)
        R.append(torch.eye(n, dtype=torch.complex128) - 2 * v @ v.conj().T / (v.abs() ** 2).sum())
    P = torch.eye(n, dtype=torch.complex128)[perm]                               # (P x)_i = x_perm[i]
    W = D[2] @ R[1] @ Finv @ D[1] @ P @ R[0] @ F @ D[0]
    torch.testing.assert_close(restricted_unitary(theta, refl, perm).detach(), W.T.detach())
    assert model.perm.tolist() == __import__("numpy").random.RandomState(1234).permutation(n).tolist()


@pytest.mark.parametrize("style,n,layers", [("tunable", 6, 4), ("fft", 8, None)])
@pytest.mark.parametrize("complex_", [True, False])
def test_eurnn_matrix_is_the_product_of_rotations(style, n, layers, complex_):
    from bench.models.eurnn import layer_pairs

    torch.manual_seed(1)
    opts = {"style": style, "complex": complex_} | ({"capacity": layers} if layers else {})
    model = build_model("eurnn", 2, 1, n, **opts).double()
    W = torch.eye(n, dtype=torch.complex128)
    k = 0
    for pairs in layer_pairs(n, style, layers or 0):
        G = torch.eye(n, dtype=torch.complex128)
        for a, b in pairs:                       # R(θ) diag(1, e^{iφ}) on (a, b), one rotation at a time
            c, s = math.cos(model.theta[k].item()), math.sin(model.theta[k].item())
            e = complex(torch.exp(1j * model.phi[k].detach())) if complex_ else 1.0
            G[a, a], G[a, b], G[b, a], G[b, b] = c, -e * s, s, e * c
            k += 1
        W = G @ W
    assert k == model.theta.numel()
    if complex_:
        W = torch.diag(torch.exp(1j * model.omega.detach())).to(W.dtype) @ W
    got = model.recurrent_matrix().detach()
    torch.testing.assert_close(got.to(torch.complex128), W.T)


@pytest.mark.parametrize("name,opts", [("urnn", {}), ("eurnn", {}), ("eurnn", {"style": "fft", "readout": "reim"}),
                                       ("eurnn", {"complex": False, "capacity": 4})])
def test_dense_and_factored_paths_agree(name, opts):
    torch.manual_seed(9)
    dense = build_model(name, 3, 2, 8, dense=True, **opts).double()
    factored = build_model(name, 3, 2, 8, dense=False, **opts).double()
    factored.load_state_dict(dense.state_dict())
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    out_d, out_f = dense(x), factored(x)
    torch.testing.assert_close(out_d, out_f)
    out_d.square().sum().backward()
    out_f.square().sum().backward()
    for (k, p), q in zip(dense.named_parameters(), factored.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=k)
    # automatic choice on CPU: dense for small n, factored for large n (few layers)
    from bench.models.urnn import dense_is_faster
    cpu = torch.device("cpu")
    assert dense_is_faster(64, 6, cpu) and not dense_is_faster(512, 6, cpu)
    assert dense_is_faster(128, 2, cpu) and not dense_is_faster(512, 2, cpu) and dense_is_faster(256, 64, cpu)


def test_ornn_wy_form_is_the_product_of_reflections():
    torch.manual_seed(2)
    n, k = 7, 4
    model = build_model("ornn", 2, 1, n, k=k).double()
    U = model.householder_vectors().detach()
    assert torch.equal(U, torch.tril(U))
    W = torch.eye(n, dtype=torch.float64)
    for j in range(k):
        u = U[:, j:j + 1]
        W = W @ (torch.eye(n, dtype=torch.float64) - 2 * u @ u.T / (u.T @ u))
    torch.testing.assert_close(model.recurrent_matrix().detach(), W.T)
    # W does not depend on the norms of the reflection vectors
    with torch.no_grad():
        model.reflections.mul_(3.7)
    torch.testing.assert_close(model.recurrent_matrix().detach(), W.T)
    model.post_step()
    norms = torch.linalg.vector_norm(model.householder_vectors(), dim=0)
    torch.testing.assert_close(norms, torch.ones(k, dtype=torch.float64))


def test_scornn_and_exprnn_matrices():
    from bench.models.unitary import skew_symmetric

    torch.manual_seed(3)
    model = build_model("scornn", 2, 1, 10, rho=3).double()
    A = skew_symmetric(model.A.detach(), 10)
    eye = torch.eye(10, dtype=torch.float64)
    D = torch.diag(torch.tensor([1.0] * 7 + [-1.0] * 3, dtype=torch.float64))
    torch.testing.assert_close(model.recurrent_matrix().detach(), torch.linalg.solve(eye + A, eye - A) @ D)
    assert build_model("scornn", 2, 1, 170, rho_frac=0.1).rho == 17
    assert build_model("scornn", 2, 1, 190).rho == 95
    model = build_model("exprnn", 2, 1, 10).double()
    S = skew_symmetric(model.A.detach(), 10)
    torch.testing.assert_close(model.recurrent_matrix().detach(), torch.linalg.matrix_exp(S))


def test_lstm_forget_bias_and_single_bias_per_gate():
    n = 5
    model = build_model("lstm", 3, 2, n, forget_bias=-4.0)
    b = model.rnn.bias_ih_l0.detach()
    assert torch.all(b[n:2 * n] == -4.0) and torch.all(b[:n] == 0) and torch.all(b[2 * n:] == 0)
    assert not model.rnn.bias_hh_l0.requires_grad and torch.all(model.rnn.bias_hh_l0 == 0)
    assert torch.all(build_model("lstm", 3, 2, n).rnn.bias_ih_l0.detach()[n:2 * n] == 1.0)


def test_gru_duplicate_biases_stay_zero():
    torch.manual_seed(4)
    n = 5
    model = build_model("gru", 3, 2, n)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 6, 3)).pow(2).mean().backward()
        opt.step()
    bias_hh = model.rnn.bias_hh_l0.detach()
    assert torch.all(bias_hh[:2 * n] == 0) and torch.any(bias_hh[2 * n:] != 0)


# ---- unitarity under training -----------------------------------------------------------------
def _train(model, steps, opts, T=10):
    torch.manual_seed(0)
    dtype = next(model.parameters()).dtype
    x, y = torch.randn(8, T, model.d_input, dtype=dtype), torch.randn(8, T, model.d_output, dtype=dtype)
    opt = GroupOptimizer({g: (ps, *opts[g]) for g, ps in model.param_groups().items()})
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        model.post_step()


# the models that claim a unitary W (fcurnn's float32 drift is bounded below, not kept under 1e-5)
UNITARY = [(c, i) for c, i in zip(ALL, IDS) if c[0] != "fcurnn" and build_model(c[0], 3, 2, 8, **c[1]).unitarity_error()
           is not None]


@pytest.mark.parametrize("name,opts", [c for c, _ in UNITARY], ids=[i for _, i in UNITARY])
def test_stays_unitary_after_200_steps_float32(name, opts):
    torch.manual_seed(5)
    model = build_model(name, 3, 2, 16, **opts)
    assert model.unitarity_error() < 1e-5
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    _train(model, 200, {g: ("rmsprop", 1e-2) for g in model.groups})
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert moved, "training did not change the model"
    assert model.unitarity_error() < 1e-5


def test_lstm_and_gru_report_no_unitarity():
    assert build_model("lstm", 2, 1, 4).unitarity_error() is None
    assert build_model("gru", 2, 1, 4).unitarity_error() is None


def test_fcurnn_cayley_step_drift_is_bounded_and_reported():
    """The Cayley step keeps W unitary only up to float32 rounding, and nothing corrects it.

    Observed (n=16, lambda=1e-2, 200 steps, seeds 0-2): max|W^H W - I| = 2.9e-5 to 3.3e-5
    (1.1e-5 with lambda=1e-3). We assert it stays below 1e-4, and that the same steps in
    float64 stay unitary to 1e-12 (so the drift is rounding, not a wrong update).
    """
    torch.manual_seed(6)
    model = build_model("fcurnn", 3, 2, 16)
    start = model.unitarity_error()
    _train(model, 200, {"W": ("cayley", 1e-2), "other": ("rmsprop", 1e-2)})
    drift = model.unitarity_error()
    assert start < 1e-6 and drift < 1e-4
    from bench.models.fcurnn import INITS
    model64 = build_model("fcurnn", 3, 2, 16).double()
    with torch.no_grad():        # a float64-exact unitary start (the float32 init is off by ~1e-7)
        model64.W.copy_(torch.view_as_real(INITS["haar"](16)))
    _train(model64, 200, {"W": ("cayley", 1e-2), "other": ("rmsprop", 1e-2)})
    assert model64.unitarity_error() < 1e-12


def test_cayley_step_is_riemannian_descent_to_first_order():
    torch.manual_seed(7)
    n, lam = 5, 1e-5
    Z = torch.complex(torch.randn(n, n, dtype=torch.float64), torch.randn(n, n, dtype=torch.float64))
    W0 = torch.linalg.qr(Z)[0]
    G = torch.complex(torch.randn(n, n, dtype=torch.float64), torch.randn(n, n, dtype=torch.float64))
    p = torch.nn.Parameter(torch.view_as_real(W0).clone())
    p.grad = torch.view_as_real(G).clone()
    CayleyStep([p], lr=lam).step()
    W1 = torch.view_as_complex(p.detach())
    torch.testing.assert_close(W1, W0 - lam * (G - W0 @ G.mH @ W0), atol=1e-8, rtol=0)   # O(lam^2)
    torch.testing.assert_close(W1.mH @ W1, torch.eye(n, dtype=W1.dtype), atol=1e-13, rtol=0)
    # real orthogonal matrices too; non-square parameters are refused
    q = torch.nn.Parameter(torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0])
    q.grad = torch.randn(n, n, dtype=torch.float64)
    CayleyStep([q], lr=0.1).step()
    torch.testing.assert_close(q.detach().T @ q.detach(), torch.eye(n, dtype=torch.float64))
    from bench.errors import ConfigError
    with pytest.raises(ConfigError, match=r"square matrices.*got a parameter of shape \(3, 4\)"):
        CayleyStep([torch.nn.Parameter(torch.zeros(3, 4))], lr=0.1)


# ---- gradients against finite differences (float64) --------------------------------------------
FD_OPTIONS = {"scurnn": {"reference_gradient": False}}


@pytest.mark.parametrize("name,opts", ALL, ids=IDS)
def test_gradients_match_finite_differences(name, opts):
    torch.manual_seed(8)
    n = 4
    model = build_model(name, 2, 3, n, **opts, **FD_OPTIONS.get(name, {})).double()
    with torch.no_grad():        # move biases off their zero init so kinks are not hit by chance
        for pname, q in model.named_parameters():
            if "bias" in pname and name not in ("lstm",):
                q.add_(torch.rand_like(q) * 0.1 - 0.15)
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    target = torch.randn(3, 5, 3, dtype=torch.float64)

    def loss():
        return ((model(x) - target) ** 2).mean()

    model.zero_grad()
    loss().backward()
    h = 1e-6
    for pname, q in model.named_parameters():
        if not q.requires_grad:
            continue
        flat, grad = q.data.view(-1), q.grad.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 8)):
            if name == "gru" and pname == "rnn.bias_hh_l0" and i < 2 * n:
                continue         # masked duplicates of bias_ih: their gradient is zero by design
            old = flat[i].item()
            flat[i] = old + h
            up = loss().item()
            flat[i] = old - h
            down = loss().item()
            flat[i] = old
            assert grad[i].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8), (pname, i)


# ---- invalid sizes and options ----------------------------------------------------------------
INVALID = [
    ("eurnn", 33, {}, r"^eurnn: tunable style needs an even hidden size \(rotations act on pairs\), got n=33; try 32 or 34$"),
    ("eurnn", 32, {"capacity": 3}, r"^eurnn: capacity L must be even \(layers come in A/B pairs\), got L=3$"),
    ("eurnn", 8, {"capacity": 10}, r"^eurnn: capacity L=10 exceeds the hidden size n=8; allowed: even L with 2 <= L <= n$"),
    ("eurnn", 8, {"capacity": 0}, r"^eurnn: capacity L must be an even integer >= 2, got 0$"),
    ("eurnn", 100, {"style": "fft"}, r"^eurnn: FFT style needs a power-of-two hidden size, got n=100; nearest: 64 or 128$"),
    ("ornn", 8, {"k": 9}, r"^ornn: number of reflections k=9 exceeds the hidden size n=8; allowed: 1 <= k <= n$"),
    ("ornn", 8, {"k": 0}, r"^ornn: number of reflections k must be a positive integer, got 0$"),
    ("scornn", 8, {"rho": 9}, r"^scornn: rho=9 negative ones do not fit in D of size n=8; allowed: 0 <= rho <= n$"),
    ("scornn", 8, {"rho_frac": 1.5}, r"^scornn: rho_frac must be a number in \[0, 1\], got 1.5$"),
    ("lstm", 0, {}, r"^lstm: hidden size must be a positive integer, got 0$"),
]


@pytest.mark.parametrize("name,n,opts,message", INVALID)
def test_invalid_sizes_raise_their_exact_error(name, n, opts, message):
    cls = get_model_class(name)
    if n > 0:
        with pytest.raises(InvalidHiddenSizeError, match=message):
            cls.check_hidden(n, **opts)
    with pytest.raises(InvalidHiddenSizeError, match=message):
        build_model(name, 2, 1, n, **opts)


def test_invalid_names_and_n_independent_errors_surface_through_the_budget_search():
    with pytest.raises(UnknownNameError, match=r"eurnn: unknown style 'butterfly'; known styles: tunable, fft"):
        build_model("eurnn", 2, 1, 8, style="butterfly")
    with pytest.raises(UnknownNameError, match=r"fcurnn: unknown init 'qr'; known inits: rand, haar, identity"):
        build_model("fcurnn", 2, 1, 8, init="qr")
    with pytest.raises(InvalidHiddenSizeError, match=r"capacity L must be even"):
        get_model_class("eurnn").hidden_for_budget(20_000, 1, 10, capacity=3)
    with pytest.raises(InvalidHiddenSizeError, match=r"eurnn: tunable style needs an even hidden size"):
        resolve(RunConfig(model="eurnn", task="copying", n_hidden=33, wandb="disabled"))
    # FFT-style sizes are powers of two: 20k lies 25% from the nearest count, which is refused
    with pytest.raises(ConfigError, match=r"--params 20000: the closest eurnn on copying has 25097 parameters "
                                          r"\(n=512\), 25% off"):
        resolve(RunConfig(model="eurnn", task="copying", params=20_000, model_options={"style": "fft"},
                          wandb="disabled"))
    cfg = resolve(RunConfig(model="eurnn", task="copying", params=24_000, model_options={"style": "fft"},
                            wandb="disabled"))
    assert cfg.n_hidden == 512


# ---- training through the one run function ------------------------------------------------------
TRAIN_OPTIONS = {"eurnn": {"capacity": 4}, "ornn": {"k": 8}}
LRS = {"lstm": 1e-2, "gru": 1e-2}


@pytest.mark.parametrize("task,seq_len", [("copying", 5), ("adding", 10)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_through_run_and_loss_goes_down(tmp_path, name, task, seq_len):
    """150 steps through bench.run.run: the validation loss falls well below the untrained model's."""
    import lightning.pytorch as pl

    from bench.run import run
    from bench.tasks import build_task

    cls = get_model_class(name)
    lr = LRS.get(name, 1e-2)
    opts = {g: [("cayley" if name == "fcurnn" and g == "W" else "adam"), lr] for g in cls.groups}
    cfg = RunConfig(model=name, task=task, seq_len=seq_len, n_hidden=16, max_steps=150, val_every=150,
                    batch_size=50, opts=opts, model_options=TRAIN_OPTIONS.get(name, {}),
                    runs_dir=str(tmp_path), wandb="disabled", quiet=True)
    result = run(cfg)
    assert result["status"] == "completed", result["error"]
    options = result["config"]["model_options"]           # with the paper row's, as resolve() made them
    assert result["n_params"] == cls.param_count(16, *TASK_DIMS[task], **options)
    # the same initial model as the run's (same seed), on the same validation data
    pl.seed_everything(cfg.seed, verbose=False)
    model = build_model(name, *TASK_DIMS[task], 16, **options)
    t = build_task(task, seq_len=seq_len)
    with torch.no_grad():
        losses = [t.loss(model(batch[0]), batch).item() for batch in t.datamodule(50).val_dataloader()]
    initial = sum(losses) / len(losses)
    assert result["metrics"]["final_val_loss"] < 0.8 * initial, (initial, result["metrics"]["final_val_loss"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_declared_option_reaches_every_entry_point(name):
    """Options are declared once (``__init__``); counting, validity and the budget search take
    any of them (a speed switch such as ``fast`` too), and an unknown one is named."""
    from bench.errors import ConfigError

    cls = MODELS[name]
    options = cls.options()
    n = cls.hidden_for_budget(5000, 3, 4, **options)
    cls.check_hidden(n, **options)
    assert cls(3, 4, n, **options).count_params() == cls.param_count(n, 3, 4, **options)
    with pytest.raises(ConfigError, match=f"unknown model option.*'bogus' for {name}; its options are"):
        cls.param_count(n, 3, 4, bogus=1)

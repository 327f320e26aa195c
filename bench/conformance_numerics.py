"""The conformance checks of a model's numerical claims: unitarity under training (unitary), the
fast path equal to the plain loop (fast-vs-step), autograd against finite differences
(gradients) and bit-identical training under one seed (determinism).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from bench.conformance_support import Check, _float64, _optimizer, _sci, _seeded, valid_n

UNITARY_STEPS, UNITARY_TOL = 100, 1e-5
FAST_TOL = 1e-10
FD_STEP, FD_TOL, FD_FLOOR = 1e-6, 1e-5, 1e-3     # relative error |g - fd| / max(|g|, |fd|, FD_FLOOR)
DETERMINISM_STEPS = 5

# Options under which autograd is the model's true derivative, where the default deliberately
# hands the optimizer another one (the gradients check uses them and says so).
GRADIENT_OPTIONS: dict[str, dict] = {
    # reference_gradient=True halves the off-diagonal A-gradient, as the paper's Theorem 2 does
    "scurnn": {"reference_gradient": False},
}
# Coordinates whose gradient is zero by design (masked duplicates): the check expects exactly 0
# there. model name -> (parameter name, flat index, n_hidden) -> bool
ZERO_GRADIENT: dict[str, Callable[[str, int, int], bool]] = {
    # nn.GRU's b_hr, b_hz duplicate b_ir, b_iz: a gradient mask keeps them at zero (models/gru.py)
    "gru": lambda pname, i, n: pname == "rnn.bias_hh_l0" and i < 2 * n,
}


def check_unitary(cls, *, quick: bool = False) -> Check:
    n = valid_n(cls, 16, {})
    with _seeded(5):
        model = cls(3, 2, n)
        start = model.unitarity_error()
        if start is None:
            return Check("unitary", None, "no claim", "unitarity_error() is None at init: the model claims no unitary "
                                                       "or orthogonal recurrent matrix")
        opt, text = _optimizer(cls, model, {})
        x, y = torch.randn(8, 10, 3), torch.randn(8, 10, 2)
        groups = model.param_groups()
        before = {g: [q.detach().clone() for q in ps] for g, ps in groups.items()}
        for _ in range(UNITARY_STEPS):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            model.post_step()
        err = model.unitarity_error()
    still = [g for g, ps in groups.items() if all(torch.equal(q, b) for q, b in zip(ps, before[g]))]
    tol = cls.unitarity_tolerance           # the model's own claim (1e-5 unless it declares a weaker one)
    ok = math.isfinite(err) and err <= tol and start <= UNITARY_TOL and not still
    claim = "" if tol == UNITARY_TOL else f", the model's declared claim; the kit's default is {_sci(UNITARY_TOL)}"
    detail = (f"max|WᴴW - I| {_sci(start)} at init, {_sci(err)} after {UNITARY_STEPS} float32 steps (limit "
              f"{_sci(tol)}{claim}), n={n}, default optimizers {text}, post_step() after each")
    if still:
        detail += f"; group(s) {', '.join(still)} did not move"
    return Check("unitary", ok, f"{_sci(err)} after {UNITARY_STEPS} steps (limit {_sci(tol)})", detail)


def check_fast(cls, *, quick: bool = False) -> Check:
    if "fast" not in cls.options():
        return Check("fast-vs-step", None, "no fast option", "the model has no `fast` option: one code path")
    n = valid_n(cls, 6, {})
    with _seeded(6):
        fast = _float64(cls(3, 2, n, fast=True))
        step = _float64(cls(3, 2, n, fast=False))
        step.load_state_dict(fast.state_dict())
        x, w = torch.randn(3, 7, 3, dtype=torch.float64), torch.randn(3, 7, 2, dtype=torch.float64)
    diffs, problems = {}, []
    with torch.no_grad():
        diffs["output (no grad)"] = (fast(x) - step(x)).abs().max().item()
    outs = []
    for model in (fast, step):
        model.zero_grad()
        out = model(x)
        (out * w).sum().backward()
        outs.append(out.detach())
    diffs["output"] = (outs[0] - outs[1]).abs().max().item()
    for (pname, a), b in zip(fast.named_parameters(), step.parameters()):
        if not a.requires_grad:
            continue
        if (a.grad is None) != (b.grad is None):
            problems.append(f"{pname}: gradient only with fast={a.grad is not None}")
        elif a.grad is not None:
            diffs[f"d{pname}"] = (a.grad - b.grad).abs().max().item()
    worst_key = max(diffs, key=lambda k: diffs[k])
    worst = diffs[worst_key]
    ok = not problems and worst <= FAST_TOL
    detail = (f"float64, n={n}, B=3, L=7: max |fast - step| {_sci(worst)} at {worst_key} (limit {_sci(FAST_TOL)}) "
              f"over outputs and {len(diffs) - 2} gradients")
    if problems:
        detail += "; " + "; ".join(problems)
    return Check("fast-vs-step", ok, f"max diff {_sci(worst)}", detail)


def check_gradients(cls, *, quick: bool = False) -> Check:
    options = GRADIENT_OPTIONS.get(cls.name, {})
    zero = ZERO_GRADIENT.get(cls.name)
    n = valid_n(cls, 4, options)
    with _seeded(8):
        model = _float64(cls(2, 3, n, **options))
        x = torch.randn(3, 5, 2, dtype=torch.float64)
        target = torch.randn(3, 5, 3, dtype=torch.float64)
    pick = torch.Generator().manual_seed(8)
    per_tensor = 2 if quick else 4

    def loss() -> float:
        with torch.no_grad():
            return ((model(x) - target) ** 2).mean().item()

    model.zero_grad()
    ((model(x) - target) ** 2).mean().backward()
    worst, where, problems, checked, zeros = 0.0, "", [], 0, 0
    for pname, q in model.named_parameters():
        if not q.requires_grad:
            continue
        if q.grad is None:
            problems.append(f"{pname} gets no gradient")
            continue
        # a complex tensor's gradient is dL/dRe + i dL/dIm: check both parts as real coordinates
        flat = (torch.view_as_real(q.data) if q.is_complex() else q.data).view(-1)
        grad = (torch.view_as_real(q.grad) if q.is_complex() else q.grad).reshape(-1)
        for i in torch.randperm(flat.numel(), generator=pick)[:per_tensor].tolist():
            g = grad[i].item()
            if zero is not None and zero(pname, i, n):
                zeros += 1
                if g != 0.0:
                    problems.append(f"{pname}[{i}] should have a zero gradient by design, got {g:.3e}")
                continue
            old = flat[i].item()
            flat[i] = old + FD_STEP
            up = loss()
            flat[i] = old - FD_STEP
            down = loss()
            flat[i] = old
            fd = (up - down) / (2 * FD_STEP)
            rel = abs(g - fd) / max(abs(g), abs(fd), FD_FLOOR)
            checked += 1
            if not math.isfinite(rel) or rel > worst:
                worst, where = (rel if math.isfinite(rel) else math.inf), f"{pname}[{i}] autograd {g:.6e}, fd {fd:.6e}"
    ok = not problems and worst <= FD_TOL
    detail = (f"float64, n={n}, {checked} coordinates (h={FD_STEP:g}), error |g - fd| / max(|g|, |fd|, {FD_FLOOR:g}) "
              f"<= {FD_TOL:g}; worst {_sci(worst)} at {where}")
    if options:
        detail += f"; built with {', '.join(f'{k}={v}' for k, v in options.items())} (the default's gradient is not " \
                  f"the true derivative by design)"
    if zeros:
        detail += f"; {zeros} coordinate(s) zero by design checked to be exactly 0"
    if problems:
        detail += "; " + "; ".join(problems)
    return Check("gradients", ok, f"max rel err {_sci(worst)}", detail)


def _train_losses(cls, seed: int, n: int) -> list[float]:
    with _seeded(seed):
        model = cls(3, 2, n)
        opt, _ = _optimizer(cls, model, {})
        x, y = torch.randn(4, 6, 3), torch.randn(4, 6, 2)
        losses = []
        for _ in range(DETERMINISM_STEPS):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            model.post_step()
            losses.append(loss.item())
    return losses


def check_determinism(cls, *, quick: bool = False) -> Check:
    n = valid_n(cls, 8, {})
    first, second = _train_losses(cls, 11, n), _train_losses(cls, 11, n)
    diff = max(abs(a - b) if math.isfinite(a - b) else math.inf for a, b in zip(first, second))
    same = first == second
    detail = (f"float32, n={n}, default optimizers, seed 11 twice: losses {', '.join(f'{v:.6g}' for v in first)}"
              + ("" if same else f" then {', '.join(f'{v:.6g}' for v in second)}"))
    if same and not all(map(math.isfinite, first)):
        return Check("determinism", False, "non-finite loss", detail)
    return Check("determinism", same, f"{DETERMINISM_STEPS} losses identical" if same else f"max diff {_sci(diff)}",
                 detail)

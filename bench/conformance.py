"""The model conformance kit: cheap checks that a model keeps the contract of ``models/base.py``
and the claims it makes (unitarity under training, a fast path equal to the plain loop).

    >>> from bench.conformance import check_model
    >>> for check in check_model("scurnn"):
    ...     print(check.name, check.status, check.figure)
    params ok 4/4 sizes, e.g. n=16 m=2 p=1: 417 = 417
    ...

``bench check-model NAME`` (bench/cmd_check.py) prints the same lines, and
tests/test_conformance.py runs the kit on every registered model. The checks, in order:

    params        ``count_params()`` of a built model equals ``param_count`` at several (n, m, p),
                  default options
    groups        ``param_groups()``: declared group names, every trainable tensor in exactly one
                  group, and the model's ``default_opts`` resolve as a run resolves them
    shapes        the output is (B, L, p), finite, for every registered task's (d_input, d_output)
    unitary       where ``unitarity_error()`` is not None at init: max|WᴴW - I| <= 1e-5 after 100
                  float32 steps of the model's ``default_opts`` through ``GroupOptimizer``, with
                  ``post_step()`` after each step (as ``bench run`` trains), every group moved
    fast-vs-step  where the model has a ``fast`` option: outputs (with and without autograd) and
                  every gradient with fast=True equal fast=False to 1e-10 in float64
    gradients     autograd against central finite differences in float64 on a few random
                  coordinates of every trainable tensor (relative error <= 1e-5)
    determinism   the same seed gives bit-identical losses over 5 training steps
    budget        at every task's anchor budget (``bench.paper.anchor_budget``)
                  ``hidden_for_budget`` lands within 5% of it
    tasks         one forward and backward through every registered task's ``loss`` on a small
                  batch of that task's form: finite loss, a finite gradient for every tensor

Each check is small (hidden sizes 4 to 16, sequences of 5 to 25 steps; MNIST's 784) and runs
under its own seed without touching the caller's random state. A check that does not apply is
reported as "n/a" with the reason, never as passed; a check that raises is a failure whose
detail is the exception.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from bench.errors import InvalidHiddenSizeError

PARAM_SIZES = ((4, 1, 10), (8, 10, 9), (16, 2, 1), (8, 3, 5))   # (n, m, p); n is raised to the next valid size
UNITARY_STEPS, UNITARY_TOL = 100, 1e-5
FAST_TOL = 1e-10
FD_STEP, FD_TOL, FD_FLOOR = 1e-6, 1e-5, 1e-3     # relative error |g - fd| / max(|g|, |fd|, FD_FLOOR)
DETERMINISM_STEPS = 5
BUDGET_TOL = 0.05
TASK_BATCH, TASK_SEQ_LEN = 2, 5                  # the synthetic tasks' generated batch: B and T

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


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``passed`` is True, False, or None where the check does not apply
    (the model makes no such claim; ``detail`` says why)."""

    name: str
    passed: bool | None
    figure: str
    detail: str = ""

    @property
    def status(self) -> str:
        return "n/a" if self.passed is None else ("ok" if self.passed else "FAIL")


def check_model(name, *, quick: bool = False) -> list[Check]:
    """Every check of the kit on the registered model ``name`` (or a ``RecurrentModel`` class).

    Args:
        name: a registry name, or a model class (passed through, as ``get_model_class`` does).
        quick: fewer sizes for ``params`` and fewer finite-difference coordinates; the other
            checks are the same. Default: ``False``.

    Raises ``UnknownNameError`` for a name that is not registered; any other error inside a
    check is that check's failure.
    """
    from bench.models import get_model_class

    cls = get_model_class(name)
    return [_run(label, check, cls, quick) for label, check in CHECKS.items()]


def _run(label: str, check, cls, quick: bool) -> Check:
    try:
        return check(cls, quick=quick)
    except Exception as exc:              # a check that cannot run is a failed check, not a crash
        return Check(label, False, f"error: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")


# ---- helpers --------------------------------------------------------------------------------
@contextmanager
def _seeded(seed: int):
    """torch, random and numpy seeded with ``seed`` inside; the caller's states restored after."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def valid_n(cls, target: int, options: dict) -> int:
    """The smallest hidden size >= ``target`` the model accepts with ``options``."""
    for n in range(target, 4 * target + 64):
        try:
            cls.check_hidden(n, **options)
            return n
        except InvalidHiddenSizeError:
            continue
    raise InvalidHiddenSizeError(f"{cls.name}: no valid hidden size between {target} and {4 * target + 63}")


def _run_options(cls, task_name: str) -> dict:
    """The model options ``bench run`` uses on ``task_name``: its paper row's, else the defaults."""
    from bench.paper import paper_setting

    row = paper_setting(cls.name, task_name)
    return dict(row.options) if row else {}


def _optimizer(cls, model, options: dict):
    """The optimizer ``bench run`` builds for ``model`` without a paper row: the model's
    ``default_opts``, generic names resolved to its reference rules (bench/config.py), one
    ``GroupOptimizer`` over its ``param_groups()`` (bench/module.py). Returns (optimizer, text)."""
    from bench.config import _resolve_opts
    from bench.optim import GroupOptimizer, format_spec, split_spec

    specs, _ = _resolve_opts(SimpleNamespace(opts={}, model_options=dict(options), model=cls.name), cls, None)
    groups = model.param_groups()
    opt = GroupOptimizer({g: (groups.get(g, []), *split_spec(spec)) for g, spec in specs.items()})
    return opt, ", ".join(f"{g}={format_spec(s)}" for g, s in specs.items())


def _float64(model):
    """``model`` in float64, complex tensors in complex128 (``Module.double()`` leaves them complex64)."""
    model.double()
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_complex():
            t.data = t.data.to(torch.complex128)
    return model


def _tasks() -> list:
    from bench.tasks import TASKS

    return [TASKS[k] for k in sorted(TASKS)]


def _sci(x: float) -> str:
    return f"{x:.1e}"


# ---- the checks -----------------------------------------------------------------------------
def check_params(cls, *, quick: bool = False) -> Check:
    rows = []
    for n0, m, p in PARAM_SIZES[:2 if quick else None]:
        n = valid_n(cls, n0, {})
        with _seeded(0):
            model = cls(m, p, n)
        rows.append((n, m, p, model.count_params(), cls.param_count(n, m, p)))
    bad = [r for r in rows if r[3] != r[4]]
    shown = bad[0] if bad else rows[-2 if len(rows) > 2 else -1]
    n, m, p, counted, formula = shown
    figure = (f"{len(rows) - len(bad)}/{len(rows)} sizes, " + ("" if bad else "e.g. ")
              + f"n={n} m={m} p={p}: {counted:,} {'!=' if bad else '='} {formula:,}")
    detail = "count_params() of the built model against param_count(n, m, p), default options: " + "; ".join(
        f"n={n} m={m} p={p} counted {c:,}, formula {f:,}" for n, m, p, c, f in rows)
    return Check("params", not bad, figure, detail)


def check_groups(cls, *, quick: bool = False) -> Check:
    n = valid_n(cls, 8, {})
    with _seeded(0):
        model = cls(3, 2, n)
    declared = tuple(cls.groups_for())
    groups = model.param_groups()
    params = {id(q): (k, q) for k, q in model.named_parameters()}
    trainable = [q for q in model.parameters() if q.requires_grad]
    problems = [f"group {g!r} is not declared (groups_for(): {', '.join(declared)})"
                for g in groups if g not in declared]
    seen: dict[int, list[str]] = {}
    for g, ps in groups.items():
        for q in ps:
            seen.setdefault(id(q), []).append(g)
    for i, gs in seen.items():
        pname, q = params.get(i, ("a tensor that is not a parameter of the model", None))
        if len(gs) > 1:
            problems.append(f"{pname} is in groups {', '.join(gs)}")
        if q is None or not q.requires_grad:
            problems.append(f"{pname} is in group {gs[0]!r} but not trainable")
    problems += [f"trainable {params[id(q)][0]} is in no group (no optimizer would train it)"
                 for q in trainable if id(q) not in seen]
    _, text = _optimizer(cls, model, {})
    figure = f"{len(trainable)} tensors in {len(groups)} group{'s' if len(groups) != 1 else ''} ({', '.join(groups)})"
    if problems:
        return Check("groups", False, f"{len(problems)} problem(s)", "; ".join(problems))
    return Check("groups", True, figure, f"every trainable tensor in exactly one group; default optimizers: {text}")


def check_shapes(cls, *, quick: bool = False) -> Check:
    seen, bad = [], []
    for task_cls in _tasks():
        task = task_cls()
        m, p = task.d_input, task.d_output
        options = _run_options(cls, task.name)
        n = valid_n(cls, 8, options)
        with _seeded(1):
            model = cls(m, p, n, **options)
            x = torch.randn(2, 5, m)
        with torch.no_grad():
            out = model(x)
        want = (2, 5, p)
        seen.append(f"{task.name} (m={m}, p={p}, n={n}{''.join(f', {k}={v}' for k, v in options.items())})")
        if tuple(out.shape) != want:
            bad.append(f"{task.name}: output {tuple(out.shape)}, expected {want}")
        elif out.dtype != x.dtype or not torch.isfinite(out).all():
            bad.append(f"{task.name}: output dtype {out.dtype} / finite {bool(torch.isfinite(out).all())}")
    figure = f"(B, L, p) on {len(seen) - len(bad)}/{len(seen)} tasks"
    return Check("shapes", not bad, figure, "; ".join(bad) if bad else "float32, B=2, L=5: " + "; ".join(seen))


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


def check_budget(cls, *, quick: bool = False) -> Check:
    from bench.paper import anchor_budget

    rows, bad = [], []
    for task_cls in _tasks():
        task = task_cls()
        m, p = task.d_input, task.d_output
        matched = anchor_budget(task.name, None, m, p)
        if matched is None:
            continue
        budget = matched[0]
        options = _run_options(cls, task.name)
        n = cls.hidden_for_budget(budget, m, p, **options)
        count = cls.param_count(n, m, p, **options)
        gap = abs(count - budget) / budget
        rows.append((gap, f"{task.name} {budget:,}: n={n} gives {count:,} ({gap:.1%})"))
        if gap > BUDGET_TOL:
            bad.append(rows[-1][1])
    if not rows:
        return Check("budget", None, "no anchor", "no registered task has an anchor budget (bench/paper.py)")
    worst = max(rows)
    figure = f"worst gap {worst[0]:.1%}"
    detail = (f"limit {BUDGET_TOL:.0%}; " + "; ".join(text for _, text in rows))
    return Check("budget", not bad, figure, detail)


def _pixel_batch(task, b: int):
    from torch.utils.data import default_collate

    from bench.tasks.mnist import N_PIXELS, PixelSequences

    gen = np.random.RandomState(3)
    data = PixelSequences(gen.randint(0, 256, (b, N_PIXELS)).astype(np.uint8), np.arange(b) % task.d_output)
    return default_collate([data[i] for i in range(b)]), f"synthetic pixel sequences ({N_PIXELS} steps, no files read)"


def _spectrogram_batch(task, b: int):
    from bench.tasks.audio import pad_batch

    frames = [torch.randn(TASK_SEQ_LEN + 2 - k, task.d_input) for k in range(b)]
    how = f"synthetic spectra padded by the task's pad_batch ({TASK_SEQ_LEN + 2} frames, no files read)"
    return pad_batch(frames), how


def _synthetic_makers() -> list[tuple[type, Callable]]:
    """Tasks whose data needs files: a batch of their form made here instead (base class, maker)."""
    from bench.tasks.audio import SpeechTaskMixin
    from bench.tasks.mnist import MNIST

    return [(MNIST, _pixel_batch), (SpeechTaskMixin, _spectrogram_batch)]


def task_batch(task_cls) -> tuple[object, object, str]:
    """(task, batch, how it was made): a synthetic batch for the tasks whose data needs files,
    else the first validation batch of the task's own data module at a short length."""
    for base, make in _synthetic_makers():
        if issubclass(task_cls, base):
            task = task_cls()
            with _seeded(2):
                batch, how = make(task, TASK_BATCH)
            return task, batch, how
    task = task_cls(seq_len=TASK_SEQ_LEN) if task_cls.uses_seq_len else task_cls()
    batch = next(iter(task.datamodule(TASK_BATCH).val_loader()))
    return task, batch, f"its datamodule's first validation batch (T={task.seq_len})"


def check_tasks(cls, *, quick: bool = False) -> Check:
    done, bad = [], []
    for task_cls in _tasks():
        task, batch, how = task_batch(task_cls)
        options = _run_options(cls, task.name)
        n = valid_n(cls, 8, options)
        with _seeded(4):
            model = cls(task.d_input, task.d_output, n, **options)
        loss = task.loss(model(batch[0]), batch)
        loss.backward()
        missing = [k for k, q in model.named_parameters() if q.requires_grad and q.grad is None]
        broken = [k for k, q in model.named_parameters() if q.grad is not None and not torch.isfinite(q.grad).all()]
        if loss.dim() != 0 or not torch.isfinite(loss):
            bad.append(f"{task.name}: loss {loss.detach()}")
        elif missing or broken:
            bad.append(f"{task.name}: " + "; ".join(
                ([f"no gradient for {', '.join(missing)}"] if missing else [])
                + ([f"non-finite gradient for {', '.join(broken)}"] if broken else [])))
        done.append(f"{task.name}: {how}, loss {loss.item():.4g}")
    figure = f"forward+backward on {len(done) - len(bad)}/{len(done)} tasks"
    return Check("tasks", not bad, figure, "; ".join(bad) if bad else f"B={TASK_BATCH}, n>=8; " + "; ".join(done))


# name -> check, in the order they run and print
CHECKS: dict[str, Callable[..., Check]] = {
    "params": check_params, "groups": check_groups, "shapes": check_shapes, "unitary": check_unitary,
    "fast-vs-step": check_fast, "gradients": check_gradients, "determinism": check_determinism,
    "budget": check_budget, "tasks": check_tasks,
}

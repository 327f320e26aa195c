"""The conformance checks of a model's declared contract: ``param_count`` (params), its
``param_groups`` (groups), output shapes on every task (shapes) and ``hidden_for_budget`` at the
tasks' anchor budgets (budget).
"""
from __future__ import annotations

import torch

from bench.conformance_support import Check, _optimizer, _run_options, _seeded, _tasks, valid_n

PARAM_SIZES = ((4, 1, 10), (8, 10, 9), (16, 2, 1), (8, 3, 5))   # (n, m, p); n is raised to the next valid size
BUDGET_TOL = 0.05


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

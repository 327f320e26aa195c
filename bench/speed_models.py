"""What ``bench speed`` times: each model at the task's sizes (its spec), built with its
optimizers as ``bench run`` builds them, and one training or inference step of it."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from bench.errors import BenchError, ConfigError

# Shapes of tasks that may be missing from the registry (no data files are needed here).
FALLBACK_DIMS = {"timit": (129, 129)}


def task_dims(task: str) -> tuple[int, int]:
    """(d_input, d_output) of a task, without reading data."""
    from bench.tasks import TASKS

    if task not in TASKS:
        if task in FALLBACK_DIMS:
            return FALLBACK_DIMS[task]
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(sorted({*TASKS, *FALLBACK_DIMS}))}")
    cls = TASKS[task]
    try:
        obj = cls()
    except BenchError:
        obj = cls
    return obj.d_input, obj.d_output


def model_specs(names: list[str], task: str, budget: int | None, hidden: int | None, plain: bool) -> list[dict]:
    """One dict per timed model: label, name, n, params, options, optimizer specs."""
    from bench.models import get_model_class
    from bench.paper import anchor_budget, paper_setting

    m, p = task_dims(task)
    if budget is None and hidden is None:
        matched = anchor_budget(task, None, m, p)
        if matched is None:
            raise ConfigError(f"the paper gives no scuRNN size for task {task!r}; pass --params or --hidden")
        budget = matched[0]
    specs = []
    for name in names:
        cls = get_model_class(name)
        row = paper_setting(name, task)
        opts = dict(row.options) if row else {}
        n = hidden if hidden is not None else cls.hidden_for_budget(budget, m, p, **opts)
        cls.check_hidden(n, **opts)
        spec = {"label": name, "name": name, "n": n, "params": cls.param_count(n, m, p, **opts), "options": opts,
                "optim": dict(row.opts) if row and row.opts else dict(cls.default_opts), "d_input": m, "d_output": p}
        specs.append(spec)
        if plain and "fast" in inspect.signature(cls.__init__).parameters:
            specs.append({**spec, "label": f"{name}-plain", "options": {**opts, "fast": False}})
    return specs


def build(spec: dict, device: torch.device, seed: int = 0):
    from bench.models import build_model
    from bench.optim import GroupOptimizer, resolve_name

    torch.manual_seed(seed)
    model = build_model(spec["name"], spec["d_input"], spec["d_output"], spec["n"], **spec["options"]).to(device)
    groups = model.param_groups()
    # generic names mean the model's reference rules, as in `bench run`
    opt = GroupOptimizer({g: (groups.get(g, []), resolve_name(o, model.semantics_for(g)), lr)
                          for g, (o, lr) in spec["optim"].items()})
    return model, opt


def train_step(model, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    F.mse_loss(model(x), y).backward()
    opt.step()
    model.post_step()


def infer_step(model, x) -> None:
    with torch.no_grad():
        model(x)

"""Shared pieces of the model conformance kit (bench/conformance.py): the :class:`Check` outcome,
seeding that leaves the caller's random state alone, valid hidden sizes, the options and
optimizer ``bench run`` would use, float64 conversion and the registered tasks.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from bench.errors import InvalidHiddenSizeError


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

    specs, _ = _resolve_opts(SimpleNamespace(opts={}, model_options=dict(options), model=cls.name), cls, None,
                             dict(options))
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

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

The checks live in bench/conformance_contract.py (params, groups, shapes, budget),
bench/conformance_numerics.py (unitary, fast-vs-step, gradients, determinism) and
bench/conformance_tasks.py (tasks); their shared helpers in bench/conformance_support.py.

Each check is small (hidden sizes 4 to 16, sequences of 5 to 25 steps; MNIST's 784) and runs
under its own seed without touching the caller's random state. A check that does not apply is
reported as "n/a" with the reason, never as passed; a check that raises is a failure whose
detail is the exception.
"""
from __future__ import annotations

from typing import Callable

from bench.conformance_contract import check_budget, check_groups, check_params, check_shapes
from bench.conformance_numerics import check_determinism, check_fast, check_gradients, check_unitary
from bench.conformance_support import Check, valid_n
from bench.conformance_tasks import check_tasks, task_batch

__all__ = ["CHECKS", "Check", "check_budget", "check_determinism", "check_fast", "check_gradients", "check_groups",
           "check_model", "check_params", "check_shapes", "check_tasks", "check_unitary", "task_batch", "valid_n"]


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


# name -> check, in the order they run and print
CHECKS: dict[str, Callable[..., Check]] = {
    "params": check_params, "groups": check_groups, "shapes": check_shapes, "unitary": check_unitary,
    "fast-vs-step": check_fast, "gradients": check_gradients, "determinism": check_determinism,
    "budget": check_budget, "tasks": check_tasks,
}

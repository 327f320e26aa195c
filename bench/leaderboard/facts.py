"""What the leaderboard asks the task registry: columns, learning curve, baseline, paper scale.

The facts live on the task classes (``Task.leaderboard_columns``, ``leaderboard_curve``,
``baseline_metrics``, ``paper_scale``; tasks/base.py). A result.json of a task this checkout
does not know (renamed, removed, or from other code) is still shown, with the defaults.
``bench.tasks`` imports torch, so it is imported here on first use, never at module top.
"""
from __future__ import annotations

from bench.columns import Column, default_columns


def task_class(task: str):
    """The registered task class named ``task``, or None for a task this checkout does not know."""
    try:
        from bench.tasks import get_task_class
        return get_task_class(task)
    except Exception:
        return None


def columns_for(task: str, metric: str | None) -> list[Column]:
    cls = task_class(task)
    if cls is not None and cls.leaderboard_columns:
        return list(cls.leaderboard_columns)
    return default_columns(metric)


def curve_for(task: str) -> str | None:
    """The learning curve ``task``'s figure shows (a column of the run's CSV), or None."""
    cls = task_class(task)
    return cls.leaderboard_curve if cls is not None else None


def baseline_metrics(task: str) -> tuple[str, ...]:
    """The logged quantities ``task``'s memoryless baseline is a value of."""
    cls = task_class(task)
    return cls.baseline_metrics if cls is not None else ("loss",)


def paper_scale(task: str) -> dict:
    """The paper's protocol for ``task`` ({} when unknown)."""
    cls = task_class(task)
    return cls.paper_scale if cls is not None else {}

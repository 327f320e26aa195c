"""What a leaderboard column is, and the columns several tasks share.

A task names the columns its leaderboard table shows (``Task.leaderboard_columns``,
tasks/base.py); ``bench leaderboard`` (bench/leaderboard/) fills them from ``result.json``.
This module imports nothing heavy, so the tasks and the leaderboard can both use it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One metric column: the first of ``keys`` present in a group's ``result["metrics"]``.

    ``paper`` names the key of ``PaperSetting.reported`` printed beside it. ``kind="step"``
    marks a step count where a missing value means "never reached" (not "not recorded").
    """

    label: str
    keys: tuple[str, ...]
    paper: str | None = None
    kind: str = "float"
    note: str = ""


FINAL_LOSS = Column("final train loss", ("final_train_loss",), "final_loss",
                    note="mean of the last 10 logged training-batch losses (the paper: loss at its last iteration)")
FIRST_BELOW = Column("first step < baseline", ("first_step_below_baseline",), "first_step_below_baseline", "step",
                     note="first logged training step at which the mean of the last 5 logged batch losses is "
                          "below the memoryless baseline (resolution: the logging interval, 10 steps); 'reached k/n' when some seeds never got there")
MSE_COLUMNS = (Column("val MSE", ("best_val_mse", "best_val_loss"), "val_mse", note="best validation MSE"),
               Column("eval MSE", ("best_ckpt_test_mse", "test_mse", "best_ckpt_test_loss"), "eval_mse",
                      note="test split at the best validation checkpoint"))


def default_columns(metric: str | None) -> list[Column]:
    """The columns of a task that names none (or is not registered): its runs' metric."""
    m = metric or "loss"
    return [Column(f"best val {m}", (f"best_val_{m}",)),
            Column(f"test {m} @ best val", (f"best_ckpt_test_{m}",)),
            Column(f"test {m} (final)", (f"test_{m}",))]

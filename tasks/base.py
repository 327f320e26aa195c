"""The interface every task implements, and the task registry.

REQUIRED members of a subclass:
    name, description       registry key and one line for ``bench list``
    d_input, d_output       per-step input features and outputs (may depend on options)
    metric, metric_mode     the task metric's name (logged as ``val/<metric>``) and "max"/"min"
    defaults, paper_scale   dicts of run defaults (seq_len, batch_size, max_steps, val_every)
                            for the CPU-sized default and for the paper's protocol
    datamodule(batch_size)  a LightningDataModule with train/val/test splits
    loss(out, batch)        scalar training loss; ``out`` is the model output (B, L, d_output)
    metrics(out, batch)     dict of metric tensors
OPTIONAL:
    baseline                the memoryless baseline of the loss (None if there is none)
    info()                  facts to record in result.json (e.g. a permutation's seed)
    leaderboard_columns     the metric columns of the task's ``bench leaderboard`` table
    leaderboard_curve       the learning curve of the task's leaderboard figure
    baseline_metrics        the logged quantities ``baseline`` is a value of
"""
from __future__ import annotations

from typing import ClassVar

import torch

from bench.columns import Column
from bench.errors import ConfigError, UnknownNameError

TASKS: dict[str, type["Task"]] = {}
# The seed of the synthetic data and of the splits, the same for every model and run seed (the
# references fix their data the same way); --data-seed changes it.
DEFAULT_DATA_SEED = 5544


class Task:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    metric: ClassVar[str] = "loss"
    metric_mode: ClassVar[str] = "min"
    defaults: ClassVar[dict] = {}
    paper_scale: ClassVar[dict] = {}
    # the paper reports the best *test* metric over epochs (Table 1): with --scale paper such tasks
    # evaluate the test split at every validation (RunConfig.track_test; any task can, on request)
    reports_best_test: ClassVar[bool] = False
    uses_seq_len: ClassVar[bool] = True
    # The leaderboard (bench/leaderboard/) asks the task for: its table's metric columns (empty:
    # best val / test of the runs' metric, bench.columns.default_columns); the learning curve
    # its figure shows (a column of the run's CSV; None: val/<the runs' metric>, else train/loss);
    # the logged quantities ``baseline`` is a value of (a curve of one of them gets the dashed line).
    leaderboard_columns: ClassVar[tuple[Column, ...]] = ()
    leaderboard_curve: ClassVar[str | None] = None
    baseline_metrics: ClassVar[tuple[str, ...]] = ("loss",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            TASKS[cls.name] = cls

    def __init__(self, seq_len: int | None = None, data_dir: str | None = None, data_seed: int = DEFAULT_DATA_SEED):
        if seq_len is not None and (not isinstance(seq_len, int) or seq_len <= 0):
            raise ConfigError(f"{self.name}: sequence length must be a positive integer, got {seq_len!r}")
        self.seq_len = seq_len if seq_len is not None else self.defaults.get("seq_len")
        self.data_dir = data_dir
        self.data_seed = data_seed

    d_input: int = 0
    d_output: int = 0

    @property
    def baseline(self) -> float | None:
        return None

    def datamodule(self, batch_size: int):
        raise NotImplementedError(f"{type(self).__name__} must define datamodule()")

    def loss(self, out: torch.Tensor, batch) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, out: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        return {}

    def info(self) -> dict:
        return {"seq_len": self.seq_len, "data_seed": self.data_seed, "baseline": self.baseline}


def get_task_class(name) -> type[Task]:
    if isinstance(name, type) and issubclass(name, Task):
        return name
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def build_task(name: str, **options) -> Task:
    return get_task_class(name)(**options)

"""Adding task, as in the scoRNN/scuRNN code (scoRNN_adding.py, scuRNN_adding.py).

Per step the input is [value, marker]: values U(0, 1), exactly two markers, the first in
[0, f-1] and the second in [f, T-1] with f = floor((T-1)/2). The target is the sum of the two
marked values; MSE on the last step. Baseline: predicting 1 gives MSE 1/6 ~ 0.167.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.columns import FINAL_LOSS, FIRST_BELOW, Column

from .base import Task
from .synthetic import SyntheticDataModule


def make_adding_batch(generator: torch.Generator, batch_size: int, T: int):
    values = torch.rand(batch_size, T, generator=generator)
    f = (T - 1) // 2
    first = torch.randint(0, f, (batch_size,), generator=generator)
    second = torch.randint(f, T, (batch_size,), generator=generator)
    markers = torch.zeros(batch_size, T)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = (values * markers).sum(1, keepdim=True)
    return torch.stack([values, markers], dim=-1), target


class Adding(Task):
    name = "adding"
    description = "adding problem: sum of the two marked values in a length-T sequence (MSE)"
    metric, metric_mode = "mse", "min"
    d_input, d_output = 2, 1
    # Paper §5.3: 100,000 training and 10,000 test sequences; batch 50.
    sizes = {"train": 100_000, "val": 1_000, "test": 10_000}
    defaults = {"seq_len": 200, "batch_size": 50, "max_steps": 1000, "val_every": 100}
    paper_scale = {"seq_len": 750, "batch_size": 50, "max_steps": 60_000, "val_every": 2000}
    leaderboard_columns = (FINAL_LOSS, FIRST_BELOW,
                           Column("test MSE", ("best_ckpt_test_mse", "test_mse"), note="test split, best-validation checkpoint"))
    leaderboard_curve = "val/mse"
    baseline_metrics = ("loss", "mse")     # the loss is the MSE: 1/6 is a value of both

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.seq_len < 3:
            from bench.errors import ConfigError
            raise ConfigError(f"adding: sequence length must be at least 3 (two markers in two halves), got {self.seq_len}")

    @property
    def baseline(self) -> float:
        return 1 / 6

    def datamodule(self, batch_size: int):
        T = self.seq_len
        return SyntheticDataModule(lambda g, b: make_adding_batch(g, b, T), self.sizes, batch_size, self.data_seed)

    def loss(self, out, batch):
        _, target = batch
        return F.mse_loss(out[:, -1], target)

    def metrics(self, out, batch):
        _, target = batch
        return {"mse": F.mse_loss(out[:, -1], target)}

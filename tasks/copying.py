"""Copying memory task, as in the scoRNN/scuRNN code (scoRNN_copying.py, scuRNN_copying.py).

Alphabet: 0 blank, 1-8 data, 9 marker; input one-hot over 10 symbols, length T + 20:
10 data symbols, T - 1 blanks, the marker, 10 blanks. Target: T + 10 blanks, then the 10
data symbols. Loss: mean cross-entropy over all T + 20 steps. Memoryless baseline:
10 ln 8 / (T + 20). Metric: accuracy on the 10 recalled symbols.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.columns import FINAL_LOSS, FIRST_BELOW, Column

from .base import Task
from .synthetic import SyntheticDataModule

N_SYMBOLS, N_CLASSES, N_COPY = 10, 9, 10


def make_copying_batch(generator: torch.Generator, batch_size: int, T: int):
    data = torch.randint(1, 9, (batch_size, N_COPY), generator=generator)
    seq = torch.zeros(batch_size, T + 2 * N_COPY, dtype=torch.long)
    seq[:, :N_COPY] = data
    seq[:, T + N_COPY - 1] = 9                       # marker at 0-based index T + 9
    target = torch.zeros_like(seq)
    target[:, T + N_COPY:] = data
    return F.one_hot(seq, N_SYMBOLS).float(), target


class Copying(Task):
    name = "copying"
    description = "copying memory: recall 10 symbols after T blanks (T+20 steps, 9 classes)"
    metric, metric_mode = "acc", "max"
    d_input, d_output = N_SYMBOLS, N_CLASSES
    # scoRNN/scuRNN protocol: 20,000 training sequences cycled in order, 1,000 test; batch 20.
    sizes = {"train": 20_000, "val": 500, "test": 1_000}
    defaults = {"seq_len": 100, "batch_size": 20, "max_steps": 1000, "val_every": 100}
    paper_scale = {"seq_len": 2000, "batch_size": 20, "max_steps": 2000, "val_every": 50}
    leaderboard_columns = (FINAL_LOSS, FIRST_BELOW,
                           Column("test acc", ("best_ckpt_test_acc", "test_acc"),
                                  note="accuracy on the 10 recalled symbols, test split, best-validation checkpoint"))
    leaderboard_curve = "train/loss"       # the training cross entropy

    @property
    def baseline(self) -> float:
        return 10 * math.log(8) / (self.seq_len + 20)

    def datamodule(self, batch_size: int):
        T = self.seq_len
        return SyntheticDataModule(lambda g, b: make_copying_batch(g, b, T), self.sizes, batch_size, self.data_seed)

    def loss(self, out, batch):
        _, target = batch
        return F.cross_entropy(out.reshape(-1, N_CLASSES), target.reshape(-1))

    def metrics(self, out, batch):
        _, target = batch
        pred = out[:, -N_COPY:].argmax(-1)
        return {"acc": (pred == target[:, -N_COPY:]).float().mean()}

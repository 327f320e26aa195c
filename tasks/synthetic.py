"""Seeded, batch-indexed synthetic data shared by the copying and adding tasks.

Batch k of a split is generated from its own generator seeded by (data_seed, split, k), so a
split is a fixed data set (like the references' "generate once, iterate in order") without
holding it in memory: adding at T=750 would be 600 MB as one tensor.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from .loader import ResumableDataModule

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class SeededBatches(Dataset):
    """Map-style dataset whose item k is a whole batch (use with ``batch_size=None``)."""

    def __init__(self, make_batch: Callable[[torch.Generator, int], tuple], n_sequences: int,
                 batch_size: int, seed: int, split: str):
        self.make_batch, self.batch_size = make_batch, batch_size
        self.n_batches = max(1, n_sequences // batch_size)
        self.base_seed = (seed * 1_000_003 + _SPLIT_IDS[split] * 7_919) % (2**62)

    def __len__(self):
        return self.n_batches

    def __getitem__(self, k: int):
        g = torch.Generator().manual_seed(self.base_seed + k)
        return self.make_batch(g, self.batch_size)


class SyntheticDataModule(ResumableDataModule):
    def __init__(self, make_batch, sizes: dict[str, int], batch_size: int, seed: int):
        super().__init__()
        self.make_batch, self.sizes, self.batch_size, self.seed = make_batch, sizes, batch_size, seed

    def _loader(self, split):
        data = SeededBatches(self.make_batch, self.sizes[split], self.batch_size, self.seed, split)
        return DataLoader(data, batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self):
        # in order, as the references iterate their fixed training sets; resumable mid-epoch
        data = SeededBatches(self.make_batch, self.sizes["train"], self.batch_size, self.seed, "train")
        return self.train_loader(data, batch_size=None, shuffle=False, seed=self.seed)

    def val_loader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

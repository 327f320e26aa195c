"""Data loading that resumes mid-epoch to the exact batch.

A run preempted at step k and resumed must see the same batches as an uninterrupted run
(issue 8). Lightning restores a datamodule's ``state_dict`` before it builds the loaders, so
the datamodule records how far into the epoch training was, and the sampler skips that many
batches on its next pass. Shuffling is reseeded from (seed, epoch), through the ``set_epoch``
hook Lightning calls at every epoch start.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """Indices 0..n-1, in order or shuffled per epoch from (seed, epoch); can skip ahead once."""

    def __init__(self, n: int, *, shuffle: bool = False, seed: int = 0):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch = 0
        self.skip_items = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        skip, self.skip_items = self.skip_items, 0
        return iter(order[skip:])


class ResumableDataModule(pl.LightningDataModule):
    """Base datamodule whose training loader resumes at the batch where a checkpoint was taken.

    Subclasses build their training loader with :meth:`train_loader` and implement
    ``val_dataloader``/``test_dataloader`` as usual.
    """

    def __init__(self):
        super().__init__()
        self._resume = {"epoch": 0, "batches": 0}
        self._train_sampler: ResumableSampler | None = None

    def train_loader(self, dataset, *, batch_size: int | None, shuffle: bool, seed: int, **kwargs) -> DataLoader:
        sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=seed)
        sampler.set_epoch(self._resume["epoch"])
        sampler.skip_items = self._resume["batches"] * (batch_size or 1)
        self._resume = {"epoch": 0, "batches": 0}
        self._train_sampler = sampler
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=batch_size is not None,
                          **kwargs)

    def state_dict(self):
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return {"epoch": trainer.current_epoch, "batches": int(done)}

    def load_state_dict(self, state):
        if state:
            self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}

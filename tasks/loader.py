"""Data loading that resumes mid-epoch to the exact batch.

A run preempted at step k and resumed must see the same batches as an uninterrupted run
(issues 8 and 12). The training loader is *stateful* in Lightning's sense: it implements
``state_dict``/``load_state_dict``, so Lightning 2.x stores its state in every checkpoint (under
``loops.fit_loop.state_dict.combined_loader``), hands it back when it rebuilds the loader on
resume (before the first ``iter()``), and does not warn that the loader is "not resumable".

The state is (epoch, batches the training loop has taken of it). The count comes from the
fit loop's own progress rather than from the loader's iterator, because Lightning prefetches a
batch ahead: the iterator is always one batch further than the training steps. Shuffling is
reseeded from (seed, epoch), through the ``set_epoch`` hook Lightning calls at every epoch start.
"""
from __future__ import annotations

from typing import Callable

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
        # eager on purpose: the order is fixed when the iterator is made (Lightning makes it, and
        # prefetches from it, before it calls set_epoch on a resumed run)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        skip, self.skip_items = self.skip_items, 0
        return iter(order[skip:])


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` over a :class:`ResumableSampler` that Lightning checkpoints.

    ``position()`` gives (epoch, batches of it the training loop has consumed) -- consumed, not
    fetched: see the module docstring. Without it the state is the start of the sampler's epoch.
    """

    def __init__(self, dataset, *args, position: Callable[[], tuple[int, int]] | None = None, **kwargs):
        super().__init__(dataset, *args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler as its sampler")
        self.position = position

    def state_dict(self) -> dict:
        epoch, taken = self.position() if self.position is not None else (self.sampler.epoch, 0)
        if taken >= len(self):          # that epoch is over: resume at the start of the next one
            epoch, taken = epoch + 1, 0
        return {"epoch": int(epoch), "batches": int(taken)}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip_items = int(state["batches"]) * (self.batch_size or 1)


class ResumableDataModule(pl.LightningDataModule):
    """Base datamodule whose training loader resumes at the batch where a checkpoint was taken.

    Subclasses build their training loader with :meth:`train_loader` and implement
    ``val_loader`` and ``test_dataloader``. With ``track_test`` (``--track-test``) every
    validation also evaluates the test split, logged as ``tracked_test/*``, for the papers that
    report the best test number over training.
    """

    def __init__(self):
        super().__init__()
        self._legacy_resume: dict | None = None
        self.track_test = False

    def val_loader(self):
        raise NotImplementedError(f"{type(self).__name__} must define val_loader()")

    def val_dataloader(self):
        val = self.val_loader()
        return [val, self.test_dataloader()] if self.track_test else val

    def train_loader(self, dataset, *, batch_size: int | None, shuffle: bool, seed: int,
                     **kwargs) -> ResumableDataLoader:
        sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=seed)
        loader = ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                     drop_last=batch_size is not None, position=self._position, **kwargs)
        if self._legacy_resume is not None:
            loader.load_state_dict(self._legacy_resume)
            self._legacy_resume = None
        return loader

    def _position(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        # `ready` counts the batches the epoch loop took from the fetcher, whichever hook the
        # checkpoint is saved from (on_train_batch_end, on_validation_end, after the step)
        return trainer.current_epoch, int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def load_state_dict(self, state):
        # checkpoints written before the loader kept its own state stored it here; Lightning
        # restores the datamodule before it builds the loader, and a loader state (newer
        # checkpoints) is loaded after this and wins
        if state and "batches" in state:
            self._legacy_resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}

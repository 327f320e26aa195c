"""The ``tasks`` conformance check: one forward and backward through every registered task's loss,
on a synthetic batch of the task's form where its data needs files.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bench.conformance_support import Check, _run_options, _seeded, _tasks, valid_n

TASK_BATCH, TASK_SEQ_LEN = 2, 5                  # the synthetic tasks' generated batch: B and T


def _pixel_batch(task, b: int):
    from torch.utils.data import default_collate

    from bench.tasks.mnist import N_PIXELS, PixelSequences

    gen = np.random.RandomState(3)
    data = PixelSequences(gen.randint(0, 256, (b, N_PIXELS)).astype(np.uint8), np.arange(b) % task.d_output)
    return default_collate([data[i] for i in range(b)]), f"synthetic pixel sequences ({N_PIXELS} steps, no files read)"


def _spectrogram_batch(task, b: int):
    from bench.tasks.audio import pad_batch

    frames = [torch.randn(TASK_SEQ_LEN + 2 - k, task.d_input) for k in range(b)]
    how = f"synthetic spectra padded by the task's pad_batch ({TASK_SEQ_LEN + 2} frames, no files read)"
    return pad_batch(frames), how


def _synthetic_makers() -> list[tuple[type, Callable]]:
    """Tasks whose data needs files: a batch of their form made here instead (base class, maker)."""
    from bench.tasks.audio import SpeechTaskMixin
    from bench.tasks.mnist import MNIST

    return [(MNIST, _pixel_batch), (SpeechTaskMixin, _spectrogram_batch)]


def task_batch(task_cls) -> tuple[object, object, str]:
    """(task, batch, how it was made): a synthetic batch for the tasks whose data needs files,
    else the first validation batch of the task's own data module at a short length."""
    for base, make in _synthetic_makers():
        if issubclass(task_cls, base):
            task = task_cls()
            with _seeded(2):
                batch, how = make(task, TASK_BATCH)
            return task, batch, how
    task = task_cls(seq_len=TASK_SEQ_LEN) if task_cls.uses_seq_len else task_cls()
    batch = next(iter(task.datamodule(TASK_BATCH).val_loader()))
    return task, batch, f"its datamodule's first validation batch (T={task.seq_len})"


def check_tasks(cls, *, quick: bool = False) -> Check:
    done, bad = [], []
    for task_cls in _tasks():
        task, batch, how = task_batch(task_cls)
        options = _run_options(cls, task.name)
        n = valid_n(cls, 8, options)
        with _seeded(4):
            model = cls(task.d_input, task.d_output, n, **options)
        loss = task.loss(model(batch[0]), batch)
        loss.backward()
        missing = [k for k, q in model.named_parameters() if q.requires_grad and q.grad is None]
        broken = [k for k, q in model.named_parameters() if q.grad is not None and not torch.isfinite(q.grad).all()]
        if loss.dim() != 0 or not torch.isfinite(loss):
            bad.append(f"{task.name}: loss {loss.detach()}")
        elif missing or broken:
            bad.append(f"{task.name}: " + "; ".join(
                ([f"no gradient for {', '.join(missing)}"] if missing else [])
                + ([f"non-finite gradient for {', '.join(broken)}"] if broken else [])))
        done.append(f"{task.name}: {how}, loss {loss.item():.4g}")
    figure = f"forward+backward on {len(done) - len(bad)}/{len(done)} tasks"
    return Check("tasks", not bad, figure, "; ".join(bad) if bad else f"B={TASK_BATCH}, n>=8; " + "; ".join(done))

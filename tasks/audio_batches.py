"""Speech batches and loss: padded (x, y, mask) batches of utterances, the two masked-MSE
conventions, the data module and the loss and metrics the speech tasks share.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.errors import ConfigError

from .audio_features import PAPER_FEATURES
from .base import DEFAULT_DATA_SEED
from .loader import ResumableDataModule


class Utterances(Dataset):
    def __init__(self, feats: list[np.ndarray]):
        self.feats = [torch.from_numpy(np.asarray(f, dtype=np.float32)) for f in feats]

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, i):
        return self.feats[i]


def pad_batch(items: list[torch.Tensor], *, pad_db: float = PAPER_FEATURES.pad_db, length: int | None = None):
    """(x, y, mask): x padded with ``pad_db`` frames to ``length`` (default: the longest item),
    y[:, t] = x[:, t + 1] (the last step's target is a pad frame), mask[:, t] = t < len."""
    T = length or max(len(f) for f in items)
    B, F = len(items), items[0].shape[1]
    x = torch.full((B, T + 1, F), pad_db)
    mask = torch.zeros(B, T)
    for b, f in enumerate(items):
        if len(f) > T:
            raise ValueError(f"utterance of {len(f)} frames is longer than the padded length {T}")
        x[b, :len(f)] = f
        mask[b, :len(f)] = 1.0
    return x[:, :-1].contiguous(), x[:, 1:].contiguous(), mask


def masked_mse(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(paper, valid): Σ mask·(out - y)² over the padded batch size (B·T·F, Wisdom's and the
    scuRNN paper's convention) and over the valid entries only (Σ mask · F, expRNN's)."""
    err = ((out - y) ** 2 * mask.unsqueeze(-1)).sum()
    return err / out.numel(), err / (mask.sum() * out.shape[-1]).clamp_min(1)


class SpectrogramDataModule(ResumableDataModule):
    """Shuffled training batches padded to their longest utterance; validation and test in a
    fixed order, padded to ``eval_length`` frames (the paper's normalisation length)."""

    def __init__(self, splits: dict[str, list[np.ndarray]], batch_size: int, seed: int, *,
                 eval_batch_size: dict[str, int], eval_length: int, pad_db: float):
        super().__init__()
        self.data = {k: Utterances(v) for k, v in splits.items()}
        self.batch_size, self.seed = batch_size, seed
        self.eval_batch_size, self.eval_length, self.pad_db = eval_batch_size, eval_length, pad_db

    def train_dataloader(self):
        return self.train_loader(self.data["train"], batch_size=self.batch_size, shuffle=True, seed=self.seed,
                                 collate_fn=partial(pad_batch, pad_db=self.pad_db))

    def _eval(self, split):
        return DataLoader(self.data[split], batch_size=self.eval_batch_size[split], shuffle=False,
                          collate_fn=partial(pad_batch, pad_db=self.pad_db, length=self.eval_length))

    def val_loader(self):
        return self._eval("val")

    def test_dataloader(self):
        return self._eval("test")


def repeat_frame_mse(feats: list[np.ndarray], length: int, pad_db: float) -> dict[str, float]:
    """Both MSE conventions of the trivial predictor y_hat[t] = x[t], for reference."""
    total = frames = 0.0
    for f in feats:
        x, y, mask = pad_batch([torch.from_numpy(f)], pad_db=pad_db, length=length)
        err, _ = masked_mse(x, y, mask)
        total += float(err) * x.numel()
        frames += float(mask.sum())
    bins = feats[0].shape[1] if feats else 1
    return {"mse": total / max(1, len(feats) * length * bins), "mse_valid": total / max(1.0, frames * bins)}


class SpeechTaskMixin:
    """Loss and metrics shared by ``timit`` and ``speech``: masked MSE on every step."""

    metric, metric_mode = "mse", "min"
    d_input = d_output = PAPER_FEATURES.n_bins
    uses_seq_len = False

    def __init__(self, seq_len: int | None = None, data_dir: str | None = None, data_seed: int = DEFAULT_DATA_SEED):
        if seq_len is not None:
            raise ConfigError(f"{self.name}: utterances have their own lengths; --seq-len {seq_len} does not apply")
        super().__init__(seq_len=None, data_dir=data_dir, data_seed=data_seed)
        self.details: dict = {}
        self.files: dict[str, list[str]] = {}     # split -> audio files, once datamodule() ran

    def loss(self, out, batch):
        _, y, mask = batch
        return masked_mse(out, y, mask)[0]

    def metrics(self, out, batch):
        _, y, mask = batch
        paper, valid = masked_mse(out, y, mask)
        return {"mse": paper, "mse_valid": valid}

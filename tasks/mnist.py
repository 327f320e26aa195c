"""Pixel-by-pixel MNIST and permuted MNIST, as in the scoRNN/scuRNN code (scoRNN_mnist.py, scuRNN_mnist.py).

Each image is a sequence of 784 pixels (row-major, one feature, /255, no normalisation); the
class is read from the last step (cross-entropy), metric accuracy. Split: train = official
training images 5000-59999 (55,000), validation = the first 5,000, test = the official 10,000.
pMNIST applies ``np.random.RandomState(92916).permutation(784)`` on the time axis,
x_perm[:, t] = x[:, perm[t]], as scoRNN and Wisdom et al. do.

Files: the four IDX files, raw or .gz, LeCun or dotted names, in ``--data-dir`` (flat, ``raw/``
or torchvision's ``MNIST/raw/``) or in the cache folder, where they are downloaded when there
is a network. The MD5 of every file's uncompressed content is checked.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.columns import Column
from bench.errors import ConfigError, DataError

from .base import DEFAULT_DATA_SEED, Task
from .idx import read_idx
from .loader import ResumableDataModule

N_PIXELS, N_CLASSES = 784, 10
PERMUTATION_SEED = 92916
N_VAL = 5000

# name stem -> (IDX dimensions, shape, MD5 of the uncompressed canonical file)
MNIST_FILES = {
    "train-images": (3, (60000, 28, 28), "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels": (1, (60000,), "a25bea736e30d166cdddb491f175f624"),
    "t10k-images": (3, (10000, 28, 28), "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels": (1, (10000,), "27ae3e4e09519cfbb04c329615203637"),
}
# Mirrors serving the LeCun names with .gz (torchvision's first mirror, then Google's CVDF copy).
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
SUBDIRS = (".", "raw", "MNIST/raw", "mnist", "MNIST", "mnist/raw")
CONNECT_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 30.0


def canonical_name(stem: str) -> str:
    return f"{stem}-idx{MNIST_FILES[stem][0]}-ubyte"


def name_variants(stem: str) -> list[str]:
    """LeCun/torchvision names and the dotted variant, each raw or .gz."""
    k = MNIST_FILES[stem][0]
    bases = [f"{stem}-idx{k}-ubyte", f"{stem}.idx{k}-ubyte"]
    return [b + ext for b in bases for ext in ("", ".gz")]


def search_dirs(root: str | Path) -> list[Path]:
    root = Path(root)
    return [root / s if s != "." else root for s in SUBDIRS]


def find_mnist_files(dirs: list[Path]) -> tuple[dict[str, Path], list[str]]:
    """(found stem -> path, missing stems), taking the first folder and name that exist."""
    found = {}
    for stem in MNIST_FILES:
        for d in dirs:
            hit = next((d / n for n in name_variants(stem) if (d / n).is_file()), None)
            if hit is not None:
                found[stem] = hit
                break
    return found, [s for s in MNIST_FILES if s not in found]


def mnist_cache_dir() -> Path:
    from .audio import cache_root

    return cache_root() / "mnist"


def _offline_reason() -> str | None:
    """Why a download will not be tried now (None if a mirror answers), without ever hanging."""
    if os.environ.get("BENCH_OFFLINE", "").strip() not in ("", "0"):
        return "BENCH_OFFLINE is set"
    url = urllib.parse.urlsplit(MIRRORS[0])
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result: dict = {}

    def probe():  # DNS has no timeout of its own, so it runs in a thread we stop waiting for
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                result["ok"] = True
        except OSError as exc:
            result["error"] = exc

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(CONNECT_TIMEOUT_S + 1)
    if result.get("ok"):
        return None
    return f"no network ({result.get('error', f'{host} did not answer within {CONNECT_TIMEOUT_S:.0f} s')})"


def download_mnist(stems: list[str], folder: Path) -> None:
    """Fetch ``stems`` as .gz into ``folder``, verifying the uncompressed MD5; atomic writes."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        name = canonical_name(stem) + ".gz"
        errors = []
        for mirror in MIRRORS:
            try:
                with urllib.request.urlopen(mirror + name, timeout=DOWNLOAD_TIMEOUT_S) as r:
                    blob = r.read()
                digest = hashlib.md5(gzip.decompress(blob)).hexdigest()
                if digest != MNIST_FILES[stem][2]:
                    raise ValueError(f"MD5 {digest} != {MNIST_FILES[stem][2]}")
            except (OSError, ValueError, EOFError) as exc:
                errors.append(f"{mirror}{name}: {exc}")
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}-", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, folder / name)
            break
        else:
            raise DataError(f"could not download {name}: " + "; ".join(errors))


def _missing_message(dirs: list[Path], missing: list[str], reason: str) -> str:
    names = ", ".join(canonical_name(s) for s in missing)
    where = ", ".join(str(d) for d in dirs)
    return (f"MNIST files not found: {names} (raw or .gz; dotted names like train-images.idx3-ubyte also work). "
            f"Looked in: {where}. Put the four IDX files in one folder and pass it with --data-dir "
            f"(or copy them to {mnist_cache_dir()}); they are at {MIRRORS[0]}. Automatic download not tried: "
            f"{reason}.")


def locate_mnist(data_dir: str | Path | None, *, download: bool = True) -> dict[str, Path]:
    """Paths of the four files: --data-dir layouts first, then the cache (downloading into it)."""
    dirs = []
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"--data-dir {data_dir} is not a folder; it should hold the four MNIST IDX files "
                            f"({', '.join(canonical_name(s) for s in MNIST_FILES)}, raw or .gz)")
        dirs += search_dirs(data_dir)
    dirs.append(mnist_cache_dir())
    found, missing = find_mnist_files(dirs)
    if not missing:
        return found
    reason = _offline_reason() if download else "download=False"
    if reason is not None:
        raise DataError(_missing_message(dirs, missing, reason))
    download_mnist(missing, mnist_cache_dir())
    found, missing = find_mnist_files(dirs)
    if missing:
        raise DataError(_missing_message(dirs, missing, "the download did not produce them"))
    return found


_LOADED: dict[tuple, dict[str, np.ndarray]] = {}


def load_mnist(data_dir: str | Path | None = None, *, download: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """The four arrays (checked: magic, shape, MD5) and their paths; cached in memory per process."""
    paths = locate_mnist(data_dir, download=download)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    if key not in _LOADED:
        _LOADED.clear()  # one copy at a time (~55 MB)
        _LOADED[key] = {stem: read_idx(paths[stem], ndim=nd, shape=shape, md5=md5)
                        for stem, (nd, shape, md5) in MNIST_FILES.items()}
    return _LOADED[key], {stem: str(p) for stem, p in paths.items()}


class PixelSequences(Dataset):
    """(784, 1) float pixel sequences in [0, 1] and int64 labels, from uint8 arrays in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images.reshape(len(images), N_PIXELS)))
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div_(255.0).unsqueeze(-1), self.labels[i]


class MNISTDataModule(ResumableDataModule):
    def __init__(self, splits: dict[str, PixelSequences], batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.splits, self.batch_size, self.eval_batch_size, self.seed = splits, batch_size, eval_batch_size, seed

    def train_dataloader(self):
        # reshuffled every epoch from (data_seed, epoch), as the reference reshuffles per epoch
        return self.train_loader(self.splits["train"], batch_size=self.batch_size, shuffle=True, seed=self.seed)

    def val_loader(self):
        return DataLoader(self.splits["val"], batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return DataLoader(self.splits["test"], batch_size=self.eval_batch_size, shuffle=False)


class MNIST(Task):
    name = "mnist"
    description = "pixel MNIST: classify 28x28 digits from 784 pixels, one per step (accuracy)"
    metric, metric_mode = "acc", "max"
    d_input, d_output = 1, N_CLASSES
    uses_seq_len = False
    permutation_seed: int | None = None
    # Evaluation batches are larger than training ones: no gradients, and the time loop costs
    # the same per step whatever the batch.
    eval_batch_size = 500
    # One epoch is 1,100 steps of 50; the paper trains 70 epochs and reports the best epoch.
    # quick: ~10 min on one CPU core for scuRNN n=116 (about 1.3 s per step of 50 images).
    defaults = {"batch_size": 50, "max_steps": 300, "val_every": 150}
    reports_best_test = True
    paper_scale = {"batch_size": 50, "max_steps": 77_000, "val_every": 1100}
    leaderboard_columns = (
        Column("best test acc", ("best_test_acc",), "test_acc",
               note="best test accuracy over epochs, as the paper reports it (needs a per-epoch test evaluation)"),
        Column("test acc @ best val", ("best_ckpt_test_acc",),
               note="test accuracy of the best-validation checkpoint: the honest number"),
        Column("test acc (final)", ("test_acc",), note="test accuracy of the final weights"),
    )
    leaderboard_curve = "val/acc"

    def __init__(self, seq_len: int | None = None, data_dir: str | None = None, data_seed: int = DEFAULT_DATA_SEED):
        if seq_len not in (None, N_PIXELS):
            raise ConfigError(f"{self.name}: the sequence length is fixed at {N_PIXELS} pixels; got --seq-len "
                              f"{seq_len!r} (leave it out)")
        super().__init__(seq_len=None, data_dir=data_dir, data_seed=data_seed)
        self.seq_len = N_PIXELS
        self.files: dict[str, str] = {}

    @property
    def baseline(self) -> float:
        return math.log(N_CLASSES)  # cross-entropy of a uniform guess

    def permutation(self) -> np.ndarray | None:
        if self.permutation_seed is None:
            return None
        return np.random.RandomState(self.permutation_seed).permutation(N_PIXELS)

    def datamodule(self, batch_size: int):
        arrays, self.files = load_mnist(self.data_dir)
        train_x = arrays["train-images"].reshape(-1, N_PIXELS)
        test_x = arrays["t10k-images"].reshape(-1, N_PIXELS)
        perm = self.permutation()
        if perm is not None:
            train_x, test_x = train_x[:, perm], test_x[:, perm]
        train_y, test_y = arrays["train-labels"], arrays["t10k-labels"]
        splits = {"train": PixelSequences(train_x[N_VAL:], train_y[N_VAL:]),
                  "val": PixelSequences(train_x[:N_VAL], train_y[:N_VAL]),
                  "test": PixelSequences(test_x, test_y)}
        return MNISTDataModule(splits, batch_size, max(batch_size, self.eval_batch_size), self.data_seed)

    def loss(self, out, batch):
        _, y = batch
        return F.cross_entropy(out[:, -1], y)

    def metrics(self, out, batch):
        _, y = batch
        return {"acc": (out[:, -1].argmax(-1) == y).float().mean()}

    def info(self) -> dict:
        info = {**super().info(), "split": {"train": 55_000, "val": N_VAL, "test": 10_000},
                "train_rows": "official training images 5000-59999; validation = the first 5000",
                "pixels": "/255, row-major, no normalisation", "files": self.files,
                "md5_verified": bool(self.files)}
        perm = self.permutation()
        if perm is not None:
            info["permutation_seed"] = self.permutation_seed
            info["permutation_sha256"] = hashlib.sha256(perm.astype(np.int64).tobytes()).hexdigest()
            info["permutation"] = perm.tolist()
        return info


class PermutedMNIST(MNIST):
    name = "pmnist"
    description = "permuted pixel MNIST: the pixels in a fixed random order (seed 92916), accuracy"
    permutation_seed = PERMUTATION_SEED

"""Next-frame log-spectrum prediction on any folder of speech (WAV, FLAC, NIST SPHERE).

The TIMIT pipeline and loss (tasks/audio.py, tasks/timit.py) for users without TIMIT
(LibriSpeech, their own recordings) and for CI on real recordings. Every audio file under
``--data-dir`` (recursively, any case) is one utterance; a split by file seeded by
``--data-seed``: 10% test, 10% validation (at least one file each), the rest train. Numbers
on such data are not comparable with published TIMIT results.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from bench.columns import MSE_COLUMNS
from bench.errors import ConfigError, DataError

from .audio import (AUDIO_EXTENSIONS, PAPER_FEATURES, SpectrogramDataModule, SpeechTaskMixin, cached_features,
                    find_audio, repeat_frame_mse)
from .base import Task

EVAL_FRACTION = 0.1
LIST_LIMIT = 50   # file lists longer than this go into result.json as a hash only


def split_files(paths: list[Path], seed: int) -> dict[str, list[Path]]:
    """Seeded split by file: test and validation each 10% (at least 1), train the rest."""
    if len(paths) < 3:
        raise DataError(f"speech needs at least 3 audio files (train, validation, test); found {len(paths)}")
    order = np.random.RandomState(seed).permutation(len(paths))
    n_eval = max(1, int(round(EVAL_FRACTION * len(paths))))
    test, val, train = order[:n_eval], order[n_eval:2 * n_eval], order[2 * n_eval:]
    return {k: [paths[i] for i in sorted(v)] for k, v in (("train", train), ("val", val), ("test", test))}


class Speech(SpeechTaskMixin, Task):
    name = "speech"
    description = "next-frame prediction of 129-bin log spectra on any folder of WAV/FLAC/SPHERE (masked MSE)"
    defaults = {"batch_size": 8, "max_steps": 200, "val_every": 50}
    paper_scale = {"batch_size": 28, "max_steps": 13_200, "val_every": 132}
    leaderboard_columns = MSE_COLUMNS
    leaderboard_curve = "val/mse"

    def datamodule(self, batch_size: int):
        if self.data_dir is None:
            raise DataError("speech needs --data-dir: a folder of speech recordings "
                            f"({', '.join(AUDIO_EXTENSIONS)}, searched recursively)")
        root = Path(self.data_dir)
        if not root.is_dir():
            raise DataError(f"--data-dir {root} is not a folder; speech needs a folder of audio files "
                            f"({', '.join(AUDIO_EXTENSIONS)})")
        paths = find_audio(root)
        if not paths:
            raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}, any case) under {root}")
        files = split_files(paths, self.data_seed)
        if batch_size > len(files["train"]):
            raise ConfigError(f"speech: --batch-size {batch_size} exceeds the {len(files['train'])} training files "
                              f"of {root}; use --batch-size {len(files['train'])} or fewer")
        ordered = files["train"] + files["val"] + files["test"]
        feats, cache = cached_features(ordered, root, PAPER_FEATURES, name="speech")
        a, b = len(files["train"]), len(files["train"]) + len(files["val"])
        data = {"train": feats[:a], "val": feats[a:b], "test": feats[b:]}
        eval_length = max(len(f) for f in data["val"] + data["test"])
        pad = PAPER_FEATURES.pad_db
        self.files = {k: [str(p) for p in v] for k, v in files.items()}
        self.details = {
            "root": str(root), "sizes": {k: len(v) for k, v in files.items()}, "eval_length": eval_length,
            "feature_cache": str(cache),
            "repeat_frame_mse": {s: repeat_frame_mse(data[s], eval_length, pad) for s in ("val", "test")},
        }
        for split, items in files.items():
            names = [str(p.relative_to(root)) for p in items]
            self.details[f"{split}_files"] = names if len(names) <= LIST_LIMIT else \
                "sha256:" + hashlib.sha256("\n".join(names).encode()).hexdigest()
        return SpectrogramDataModule(data, batch_size, self.data_seed, eval_length=eval_length, pad_db=pad,
                                     eval_batch_size={"val": batch_size, "test": batch_size})

    def info(self) -> dict:
        return {"data_seed": self.data_seed, "features": dataclasses.asdict(PAPER_FEATURES),
                "split": "by file, seeded by data_seed: 10% test, 10% val (>= 1 each), rest train",
                "metric_convention": "mse = masked error / (B*T*129), paper; mse_valid = per valid entry",
                **self.details}

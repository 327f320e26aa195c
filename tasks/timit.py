"""TIMIT next-frame log-spectrum prediction, Wisdom et al.'s protocol that the scuRNN paper
cites (stwisdom/urnn timit_prediction.py).

Data: the LDC corpus (LDC93S1) as distributed, TRAIN/ and TEST/, DR1-DR8, one folder per
speaker, NIST SPHERE ``.WAV`` files (RIFF WAVs also accepted), names matched in any case.
SA sentences are excluded by the sentence name (the file stem), not by a substring of the
path (which would also drop the 7 training speakers whose IDs contain "sa").
Splits: train = every TRAIN utterance without SA (3,696); validation = the 50 dev-set speakers
(400); test = the 24 core-test speakers (192). Features: tasks/audio.py (MATLAB resample to
8 kHz and 16-bit requantisation as Wisdom's script, 129 bins, log-power, -50 dB floor); the
target of frame t is frame t + 1.

Loss and the two logged conventions (paper §5.4; expRNN's 3_timit.py): ``mse`` divides the masked
squared error by the padded batch size B·T·129 (Wisdom's and the paper's convention, the
leaderboard's metric); ``mse_valid`` by the valid entries only (expRNN's). Validation and test
are single batches padded to the longest non-SA TEST utterance, as Wisdom evaluates them, so
both numbers are exact over the split and ``mse`` is comparable with the paper's Table 2.
Training batches are padded to their own longest utterance (less compute; the loss is the
same convention over that padding).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from bench.columns import MSE_COLUMNS
from bench.errors import ConfigError, DataError

from .audio import (PAPER_FEATURES, SpectrogramDataModule, SpeechTaskMixin, audio_length, cached_features,
                    find_audio, n_frames, repeat_frame_mse)
from .base import Task

# Kaldi's egs/timit/s5/conf/dev_spk.list (= stwisdom/urnn timit_dev_spk.list): 50 speakers.
DEV_SPEAKERS = frozenset("""
faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0
fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0
mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0
mteb0 mjfc0 mrjr0 fmml0 mrws1""".split())
# The core test set: 2 male + 1 female speakers per dialect region, 24 speakers.
CORE_TEST_SPEAKERS = frozenset("""
mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0
mbpm0 mklt0 fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0""".split())
EXPECTED_SIZES = {"train": 3696, "val": 400, "test": 192}
CORPUS_HELP = ("the LDC TIMIT corpus (LDC93S1): a folder holding TRAIN/ and TEST/ (any case), each with "
               "DR1..DR8/<SPEAKER>/<SENTENCE>.WAV. TIMIT is licensed by the LDC and is not downloaded "
               "automatically")


def find_timit_root(data_dir: str | Path) -> Path:
    """The folder under ``data_dir`` (itself or up to three levels down) holding TRAIN and TEST."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder; timit needs {CORPUS_HELP}")
    level = [data_dir]
    for _ in range(4):
        for d in level:
            names = {c.name.lower() for c in d.iterdir() if c.is_dir()}
            if {"train", "test"} <= names:
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
    raise DataError(f"no TRAIN/ and TEST/ folders found in {data_dir} (or three levels below); timit needs "
                    f"{CORPUS_HELP}")


def _subdir(root: Path, name: str) -> Path:
    return next(c for c in root.iterdir() if c.is_dir() and c.name.lower() == name)


def timit_utterances(root: Path) -> list[dict]:
    """Every utterance: {"part": "train"|"test", "dialect", "speaker", "sentence", "path"}."""
    out = []
    for part in ("train", "test"):
        base = _subdir(root, part)
        for path in find_audio(base):
            rel = path.relative_to(base).parts
            if len(rel) != 3:      # not DRn/<SPK>/<file>: stray files (e.g. notes) are skipped
                continue
            sentence = path.name.split(".")[0].upper()
            out.append({"part": part, "dialect": rel[0].upper(), "speaker": rel[1].upper(),
                        "sentence": sentence, "path": path})
    return out


def is_sa(utt: dict) -> bool:
    """SA1/SA2 (read by every speaker), recognised by the sentence name only."""
    return utt["sentence"].startswith("SA")


def timit_splits(utterances: list[dict]) -> dict[str, list[dict]]:
    keep = [u for u in utterances if not is_sa(u)]
    return {
        "train": [u for u in keep if u["part"] == "train"],
        "val": [u for u in keep if u["part"] == "test" and u["speaker"].lower() in DEV_SPEAKERS],
        "test": [u for u in keep if u["part"] == "test" and u["speaker"].lower() in CORE_TEST_SPEAKERS],
    }


class TIMIT(SpeechTaskMixin, Task):
    name = "timit"
    description = "TIMIT next-frame prediction of 129-bin log-magnitude spectra (masked MSE, paper convention)"
    # 3,696 / 28 = 132 steps per epoch; Wisdom's runs: batch 28, at most 100 epochs, validate every epoch.
    defaults = {"batch_size": 28, "max_steps": 264, "val_every": 132}
    paper_scale = {"batch_size": 28, "max_steps": 13_200, "val_every": 132}
    leaderboard_columns = MSE_COLUMNS
    leaderboard_curve = "val/mse"

    def datamodule(self, batch_size: int):
        if self.data_dir is None:
            raise DataError(f"timit needs --data-dir: {CORPUS_HELP}")
        root = find_timit_root(self.data_dir)
        utts = timit_utterances(root)
        splits = timit_splits(utts)
        for split, who in (("train", "TRAIN speakers"), ("val", "the 50 dev-set speakers"),
                           ("test", "the 24 core-test speakers")):
            if not splits[split]:
                raise DataError(f"no {split} utterances (non-SA sentences of {who}) under {root}; timit needs "
                                f"{CORPUS_HELP}")
        sizes = {k: len(v) for k, v in splits.items()}
        if sizes != EXPECTED_SIZES:
            warnings.warn(f"timit: split sizes {sizes} differ from the full corpus's {EXPECTED_SIZES}; results "
                          "are not comparable with the paper", stacklevel=2)
        if batch_size > sizes["train"]:
            raise ConfigError(f"timit: --batch-size {batch_size} exceeds the {sizes['train']} training utterances")
        # Wisdom pads every TEST utterance (dev, core and the unused rest) to the longest one.
        test_pool = [u for u in utts if u["part"] == "test" and not is_sa(u)]
        eval_length = max(n_frames(*audio_length(u["path"])) for u in test_pool)
        ordered = splits["train"] + splits["val"] + splits["test"]
        feats, cache = cached_features([u["path"] for u in ordered], root, PAPER_FEATURES, name="timit")
        a, b = sizes["train"], sizes["train"] + sizes["val"]
        data = {"train": feats[:a], "val": feats[a:b], "test": feats[b:]}
        pad = PAPER_FEATURES.pad_db
        self.files = {k: [str(u["path"]) for u in v] for k, v in splits.items()}
        self.details = {
            "root": str(root), "sizes": sizes, "complete_corpus": sizes == EXPECTED_SIZES,
            "eval_length": eval_length, "feature_cache": str(cache),
            "repeat_frame_mse": {s: repeat_frame_mse(data[s], eval_length, pad) for s in ("val", "test")},
        }
        return SpectrogramDataModule(data, batch_size, self.data_seed, eval_length=eval_length, pad_db=pad,
                                     eval_batch_size={"val": sizes["val"], "test": sizes["test"]})

    def info(self) -> dict:
        import dataclasses

        return {"data_seed": self.data_seed, "features": dataclasses.asdict(PAPER_FEATURES),
                "splits": "train = TRAIN without SA; val = 50 dev speakers; test = 24 core-test speakers",
                "metric_convention": "mse = masked error / (B*T*129), paper; mse_valid = per valid entry",
                **self.details}

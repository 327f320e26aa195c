"""Speech features shared by the ``timit`` and ``speech`` tasks (stwisdom/urnn util.py, downsample_audio.m).

The pipeline of Wisdom et al., which the scuRNN paper cites: first channel, resample to
8 kHz as MATLAB's ``resample(x, 8000, 16000)`` does and requantise to 16 bits as MATLAB's
``wavwrite`` does (``resampler="matlab"``, the default; ``"torchaudio"`` uses
torchaudio.functional.resample and no requantisation), right-pad with zeros to a multiple of
the hop, 256 zeros on each side, STFT with a periodic Hann window of 256 and hop 128 (129
bins), then 10·log10(1e-5 + |X|²). An utterance of L samples at 8 kHz gives ceil(L/128) + 3
frames; padded frames are -50 dB.

The pieces: tasks/audio_resample.py (the step to 8 kHz), tasks/audio_files.py (reading NIST
SPHERE / RIFF / FLAC files), tasks/audio_features.py (the settings and the log-spectrogram) and
tasks/audio_batches.py (the padded (x, y, mask) batches with the two masked-MSE conventions).
Here: the on-disk feature cache (keyed by the pipeline settings and the files; written
atomically), and every name of the pieces, so that ``bench.tasks.audio`` stays the one import.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write

from .audio_batches import (SpectrogramDataModule, SpeechTaskMixin, Utterances, masked_mse, pad_batch,
                            repeat_frame_mse)
from .audio_features import PAPER_FEATURES, FeatureSettings, file_features, log_spectrogram, n_frames, resample
from .audio_files import (AUDIO_EXTENSIONS, SPH2PIPE_HINT, audio_length, check_sphere, find_audio, pick_readable,
                          read_audio, sphere_header)
from .audio_resample import RESAMPLERS, matlab_resample, resample_filter, resample_matlab, resample_torchaudio, wav16

__all__ = [
    "AUDIO_EXTENSIONS", "PAPER_FEATURES", "RESAMPLERS", "SPH2PIPE_HINT", "FeatureSettings", "SpectrogramDataModule",
    "SpeechTaskMixin", "Utterances", "audio_length", "cache_key", "cache_root", "cached_features", "check_sphere",
    "file_features", "find_audio", "log_spectrogram", "masked_mse", "matlab_resample", "n_frames", "pad_batch",
    "pick_readable", "read_audio", "repeat_frame_mse", "resample", "resample_filter", "resample_matlab",
    "resample_torchaudio", "sphere_header", "wav16",
]


def cache_root() -> Path:
    """Where downloads and feature caches go: $BENCH_CACHE_DIR, else ~/.cache/unitary-rnn-bench."""
    env = os.environ.get("BENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unitary-rnn-bench"


# ---- the feature cache ------------------------------------------------------------------------

def _file_id(path: Path, root: Path) -> list:
    st = path.stat()
    try:
        name = str(path.relative_to(root))
    except ValueError:
        name = str(path)
    return [name, st.st_size, st.st_mtime_ns]


def cache_key(paths: list[Path], root: Path, settings: FeatureSettings) -> dict:
    from importlib.metadata import version

    key = {"settings": dataclasses.asdict(settings), "root": str(Path(root).resolve()),
           "files": [_file_id(Path(p), Path(root)) for p in paths]}
    if settings.resampler == "torchaudio":    # its version stands for its resampler's code
        key["torchaudio"] = version("torchaudio")
    return key


def cached_features(paths: list[Path], root: str | Path, settings: FeatureSettings = PAPER_FEATURES, *,
                    name: str = "speech", cache_dir: str | Path | None = None) -> tuple[list[np.ndarray], Path]:
    """Features of every file in ``paths`` (in order), computed once and cached on disk.

    The cache file's name is a hash of the settings and of the files (path, size, mtime), so
    changed settings or files select a new cache; the key is also stored inside and checked.
    It is written to a temporary file and renamed, so a half-written cache is never read; an
    unreadable one is rebuilt. Returns (features, cache path).
    """
    key = cache_key(paths, root, settings)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    path = folder / f"{name}-{digest}.npz"
    feats = _load_cache(path, key)
    if feats is not None:
        return feats, path
    started = time.time()
    print(f"[bench] computing {settings.n_bins}-bin log-spectra of {len(paths)} audio files "
          f"(cached afterwards in {path})", file=sys.stderr, flush=True)
    feats = [file_features(p, settings) for p in paths]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_cache(path, key, feats)
    except OSError as exc:  # a read-only cache folder costs time, not correctness
        print(f"[bench] could not write the feature cache {path}: {exc}; set BENCH_CACHE_DIR to a writable "
              "folder", file=sys.stderr)
    print(f"[bench] features done in {time.time() - started:.1f} s", file=sys.stderr, flush=True)
    return feats, path


def _write_cache(path: Path, key: dict, feats: list[np.ndarray]) -> None:
    lengths = np.array([len(f) for f in feats], dtype=np.int64)
    stacked = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    atomic_write(path, lambda f: np.savez(f, features=stacked, lengths=lengths,
                                          key=np.array(json.dumps(key, sort_keys=True))))


def _load_cache(path: Path, key: dict) -> list[np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != json.loads(json.dumps(key, sort_keys=True)):
                return None
            stacked, lengths = data["features"], data["lengths"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        print(f"[bench] ignoring unreadable feature cache {path} ({exc}); rebuilding it", file=sys.stderr)
        return None
    if lengths.sum() != len(stacked) or len(lengths) != len(key["files"]):
        return None
    return np.split(stacked, np.cumsum(lengths)[:-1]) if len(lengths) else []

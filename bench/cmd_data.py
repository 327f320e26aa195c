"""``bench data features``: the features one audio file gives, exactly as training sees them."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from bench.errors import ConfigError, DataError


def cmd_features(args: argparse.Namespace) -> int:
    import numpy as np

    from bench.atomic import atomic_write
    from bench.tasks.audio import PAPER_FEATURES, RESAMPLERS, file_features

    resampler = args.resampler or PAPER_FEATURES.resampler
    if resampler not in RESAMPLERS:
        raise ConfigError(f"--resampler {resampler!r}: known resamplers are {', '.join(RESAMPLERS)}")
    source, out = Path(args.audio_file), Path(args.out)
    if not source.exists():
        raise DataError(f"AUDIO_FILE {source} does not exist")
    if not source.is_file():
        raise DataError(f"AUDIO_FILE {source} is not a file")
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'features.npy'}")
    if not folder.is_dir():
        raise ConfigError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: the folder {folder} is not writable")

    settings = dataclasses.replace(PAPER_FEATURES, resampler=resampler)
    try:
        feats = file_features(source, settings)                    # the function the speech tasks cache
    except OSError as exc:
        raise DataError(f"AUDIO_FILE {source}: cannot read it ({exc.strerror or exc})") from None
    try:
        atomic_write(out, lambda f: np.save(f, feats))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
    print(f"wrote {out}: {feats.shape[0]} frames x {feats.shape[1]} bins, float32 10*log10({settings.floor:g} + |X|^2) "
          f"at {settings.sample_rate} Hz (resampler {settings.resampler})", file=sys.stderr)
    return 0


def register(sub) -> None:
    # no import of the feature code here: `bench --help` must not wait for torch
    p = sub.add_parser("data", help="inspect the data pipeline (speech features)",
                       description="Inspect what the harness feeds a model.")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True
    f = data_sub.add_parser(
        "features", help="write the (frames, 129) log-magnitude features of one audio file as .npy",
        description="Write the float32 (frames, 129) log-magnitude features of one WAV/FLAC/SPHERE file, "
                    "computed by the same function the timit and speech tasks use (docs/data.md).")
    f.add_argument("audio_file", metavar="AUDIO_FILE", help="a WAV, FLAC or uncompressed NIST SPHERE file")
    f.add_argument("--out", required=True, metavar="FEATURES.npy", help="where to write the features (numpy .npy)")
    f.add_argument("--resampler",
                   help="matlab: MATLAB resample + 16-bit wavwrite, Wisdom's pipeline (default); "
                        "torchaudio: torchaudio.functional.resample, no requantisation")
    f.set_defaults(func=cmd_features)

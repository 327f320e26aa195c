"""The results store: one immutable result.json per run, written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.atomic import atomic_write_text

RESULT_FILE = "result.json"
RESULT_VERSION = 1
# Exit code of `bench run` when SIGTERM/SIGUSR1 stopped it after saving a checkpoint
# (EX_TEMPFAIL: "try again"); continue with `bench run --resume RUN_DIR`.
EXIT_PREEMPTED = 75
EXIT_DIVERGED = 3
# The exit code of each run status: `bench run`'s, and the W&B run's (0 = finished, else failed).
# A pruned trial is the sweep working as meant: finished, with a "pruned" tag (tracking.py).
EXIT_CODES = {"completed": 0, "pruned": 0, "diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED,
              "interrupted": EXIT_PREEMPTED}


def writable_folder(path: Path, what: str = "folder", flag: str = "--runs-dir") -> Path:
    """Create ``path`` if needed and check it can be written, or raise ConfigError naming it and
    the flag that chooses another."""
    from bench.errors import ConfigError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {path}: {exc.strerror}; choose another with {flag}") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path} is not writable; choose another with {flag}")
    return path


def write_result(run_dir: Path, result: dict) -> Path:
    path = Path(run_dir) / RESULT_FILE
    if path.exists():
        raise FileExistsError(f"{path} exists: results are immutable; start a new run directory")
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_result(path: Path):
    """The parsed JSON of a result file (its fields are checked by whoever reads them:
    bench.leaderboard.load.check_result)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_results(runs_dir: Path):
    """Yield ``(path, parsed JSON or None, error or None)`` for every result.json under
    ``runs_dir``: the one reader of result files (leaderboard, sync, sweeps)."""
    for path in sorted(Path(runs_dir).rglob(RESULT_FILE)):
        try:
            yield path, read_result(path), None
        except (OSError, ValueError) as exc:      # ValueError: bad JSON or bad UTF-8
            yield path, None, f"{type(exc).__name__}: {exc}"

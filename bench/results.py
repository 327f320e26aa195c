"""The results store: one immutable result.json per run, written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

RESULT_FILE = "result.json"
RESULT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write(path: Path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file in the same folder, fsync, then rename
    it over ``path``.

    A reader sees the old file or the whole new one, never half a file; a crash leaves at
    most a ``.tmp-*`` file, which readers ignore.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())     # mkstemp makes 0600; results are shared on clusters
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

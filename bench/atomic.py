"""Atomic file writes: a reader sees the old file or the whole new one, never half a file.

A leaf module (standard library only), so that the tasks' feature cache and the harness's
results, curves and diagnostics share it without depending on each other.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

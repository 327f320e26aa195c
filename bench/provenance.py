"""Where a result comes from: the code's version (git SHA, or the one baked into the Docker image),
the library versions and the hardware, recorded in every result.json."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def code_version() -> dict:
    root = Path(__file__).resolve().parent.parent
    info = {"package": _version("unitary-rnn-bench")}
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            info["git_sha"] = sha.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    if "git_sha" not in info and os.environ.get("BENCH_GIT_SHA"):     # baked into the Docker image
        info["git_sha"] = os.environ["BENCH_GIT_SHA"]
        info["git_sha_from"] = "BENCH_GIT_SHA"
    return info


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def library_versions() -> dict:
    libs = ("torch", "torchaudio", "lightning", "optuna", "wandb", "numpy", "pandas")
    return {"python": platform.python_version(), **{lib: _version(lib) for lib in libs}}


def hardware() -> dict:
    import torch

    info = {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info

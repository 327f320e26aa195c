"""Shared fixtures: the real-data folder (MNIST and speech clips) and an isolated data cache.

The real data lives outside the repository. ``BENCH_DATA_DIR`` names a folder with ``mnist/``
and ``speech/`` subfolders; without it, ``../shared/data`` next to the repository is used if it
exists. Tests that need it skip with the reason when it is absent, or fail when
``BENCH_REQUIRE_DATA=1`` (CI sets it, so these tests are never skipped there).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# One intra-op thread for every test (and, through the environment, every subprocess): the
# test models are tiny, and on a machine whose cores are busy two threads spin-wait for each
# other and make small recurrent steps many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    import torch

    torch.set_num_threads(1)
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def _missing_data(reason: str):
    if os.environ.get("BENCH_REQUIRE_DATA", "").strip() == "1":
        pytest.fail(f"BENCH_REQUIRE_DATA=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real-data folder; skips (or fails under BENCH_REQUIRE_DATA=1) when it is absent."""
    env = os.environ.get("BENCH_DATA_DIR", "").strip()
    path = Path(env).expanduser() if env else DEFAULT_DATA_DIR
    if not path.is_dir():
        how = f"BENCH_DATA_DIR={env}" if env else f"the default {DEFAULT_DATA_DIR} (set BENCH_DATA_DIR)"
        _missing_data(f"real-data folder not found: {how} should hold mnist/ and speech/")
    return path


@pytest.fixture(scope="session")
def mnist_dir(real_data_dir) -> Path:
    path = real_data_dir / "mnist"
    if not path.is_dir():
        _missing_data(f"no mnist/ folder in the real-data folder {real_data_dir}")
    return path


@pytest.fixture(scope="session")
def speech_dir(real_data_dir) -> Path:
    path = real_data_dir / "speech"
    if not path.is_dir():
        _missing_data(f"no speech/ folder in the real-data folder {real_data_dir}")
    return path


@pytest.fixture
def data_cache(tmp_path, monkeypatch) -> Path:
    """A private cache folder for downloads and features, and no download attempts."""
    cache = tmp_path / "bench-cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    return cache


@pytest.fixture
def one_thread():
    """Run torch on one thread: on a machine whose cores are busy with other jobs, two
    intra-op threads spin-wait for each other and small recurrent steps get many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

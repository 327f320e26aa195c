"""Choosing and building the compiled recurrence loops (models/fastpath_native.py).

Their numbers are tested in test_fastpath.py (the ``kernel`` fixture runs every recurrence test
with both loops against the plain autograd loop). Here: ``BENCH_KERNEL``'s values, a build that
fails (auto says so and uses the PyTorch loops, native refuses), a build killed with SIGKILL
while it holds torch's build lock (the next build must not wait forever), and what result.json
and ``bench speed`` record.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.models import fastpath_native

HAS_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """fastpath_native as if nothing had been built in this process, building under tmp_path."""
    monkeypatch.setattr(fastpath_native, "_module", None)
    monkeypatch.setattr(fastpath_native, "_failure", None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    return tmp_path


def test_bad_kernel_name_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("BENCH_KERNEL", "fast")
    with pytest.raises(ConfigError, match=r"BENCH_KERNEL='fast' is not a kernel; use one of auto, native, torch"):
        fastpath_native.kernel()


def test_torch_kernel_builds_nothing(fresh, monkeypatch):
    monkeypatch.setenv("BENCH_KERNEL", "torch")
    assert fastpath_native.kernel() is None
    assert fastpath_native.status() == {"kernel": "torch", "reason": "BENCH_KERNEL=torch"}
    assert not (fresh / "ext").exists()


def test_accelerator_runs_the_torch_loops(monkeypatch):
    monkeypatch.setenv("BENCH_KERNEL", "native")
    assert fastpath_native.status(on_cpu=False)["kernel"] == "torch"


def test_failed_build_auto_says_so_native_refuses(fresh, monkeypatch, capsys):
    broken = fresh / "broken.cpp"
    broken.write_text('#error "no compiler for you"\n')
    monkeypatch.setattr(fastpath_native, "SOURCE", broken)
    monkeypatch.setattr(fastpath_native, "NAME", "bench_broken_test")
    monkeypatch.setenv("BENCH_KERNEL", "auto")
    assert fastpath_native.kernel() is None
    err = capsys.readouterr().err
    assert "using the PyTorch recurrence loops (same numbers, slower)" in err and "BENCH_KERNEL=torch" in err
    assert "Traceback" not in err
    state = fastpath_native.status()
    assert state["kernel"] == "torch" and state["reason"].startswith("the compiled recurrence could not be built")
    monkeypatch.setenv("BENCH_KERNEL", "native")
    with pytest.raises(ConfigError, match="BENCH_KERNEL=native, but the compiled recurrence could not be built"):
        fastpath_native.kernel()
    with pytest.raises(ConfigError, match="BENCH_KERNEL=native, but"):     # bench run asks this before any work
        fastpath_native.status()


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler: the compiled loops cannot be built here")
def test_auto_uses_the_compiled_loops_where_they_build(monkeypatch):
    """So that every model test that runs the fused path here runs the compiled loops."""
    monkeypatch.setenv("BENCH_KERNEL", "auto")
    assert fastpath_native.kernel() is not None
    assert fastpath_native.status()["kernel"] == "native"


BUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bench.models import fastpath_native as f
    f.SOURCE, f.NAME = Path(sys.argv[1]), "bench_lock_test"
    m = f.kernel()
    print("answer", m.answer() if m is not None else f._failure)
""")


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler: the compiled loops cannot be built here")
def test_build_killed_holding_torchs_lock_does_not_block_the_next(tmp_path):
    """torch's build lock is a file; a build killed with SIGKILL leaves it, and torch's next build
    of the same extension waits for it forever. bench's own lock (flock) dies with the process."""
    source = tmp_path / "tiny.cpp"
    source.write_text("#include <pybind11/pybind11.h>\n"
                      "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def(\"answer\", []() { return 42; }); }\n")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "BENCH_KERNEL": "native"}
    def lock():
        return next((tmp_path / "ext").glob("bench_lock_test-*/lock"), None)
    first = subprocess.Popen([sys.executable, "-c", BUILD, str(source)], env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while lock() is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if lock() is None:
        first.kill()
        out, err = first.communicate()
        pytest.fail(f"the first build never took torch's lock: {out.decode()} {err.decode()}")
    os.killpg(first.pid, signal.SIGKILL)                  # the compiler too
    first.wait()
    assert lock() is not None, "the killed build should leave torch's lock behind"
    second = subprocess.run([sys.executable, "-c", BUILD, str(source)], env=env, capture_output=True, text=True,
                            timeout=180)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "answer 42"
    assert lock() is None
    third = subprocess.run([sys.executable, "-c", BUILD, str(source)], env=env, capture_output=True, text=True,
                           timeout=60)
    assert third.stdout.strip() == "answer 42" and "building" not in third.stderr   # the stamp: no rebuild


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler: the compiled loops cannot be built here")
def test_result_json_and_bench_speed_name_the_loops(tmp_path, monkeypatch, capsys):
    """A run records the loops its fused recurrence ran (and bench/allocator.py's setting)."""
    from bench.allocator import keep_freed_memory
    from bench.cli import main

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("BENCH_KERNEL", "torch")
    assert main(["run", "--model", "scornn", "--task", "copying", "--seq-len", "10", "--max-steps", "3",
                 "--val-every", "3", "--runs-dir", str(tmp_path), "--quiet", "--wandb", "disabled"]) == 0
    (path,) = Path(tmp_path).glob("copying/scornn/*/result.json")
    result = json.loads(path.read_text())
    assert result["recurrence_kernel"] == {"kernel": "torch", "reason": "BENCH_KERNEL=torch"}
    assert result["allocator"] == keep_freed_memory()
    monkeypatch.setenv("BENCH_KERNEL", "native")
    capsys.readouterr()
    assert main(["speed", "--task", "copying", "--seq-len", "5", "--batch", "2", "--model", "scornn", "--repeats",
                 "1", "--warmup", "0", "--no-memory", "--no-floor"]) == 0
    assert "fused recurrence: native loops" in capsys.readouterr().out

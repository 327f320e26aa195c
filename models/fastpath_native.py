"""The compiled time loops of the fast recurrence (``fastpath_native.cpp``), built on first use.

``models/fastpath.py`` runs its forward and backward time loops here on the CPU: per step one
``addmm`` through ATen and one vectorised C++ pass for the activation, instead of 8-10 ATen calls
from Python. The PyTorch loops stay the reference (the tests compare the two).

Which one runs is ``BENCH_KERNEL``:

* ``auto`` (default): the compiled loops when they build (a C++ compiler and the Python headers;
  the first build takes about a minute; the library is kept in ``TORCH_EXTENSIONS_DIR``, default
  ``~/.cache/torch_extensions``, and rebuilt when the source, the flags or torch change), else
  the PyTorch loops, said once on stderr with the reason;
* ``native``: the compiled loops, or an error naming why they cannot be built;
* ``torch``: the PyTorch loops.

``status()`` says which is in use and why; ``bench run`` writes it to result.json.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import io
import logging
import os
import sys
from pathlib import Path

from bench.errors import ConfigError

KERNELS = ("auto", "native", "torch")
NAME = "bench_fastpath_native"
SOURCE = Path(__file__).with_name("fastpath_native.cpp")
# vectorising the loops needs both; neither changes a result (no fast-math)
CFLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno"]

_module = None          # the loaded extension
_failure: str | None = None   # why it could not be built, once tried


def requested() -> str:
    """``BENCH_KERNEL``, checked."""
    value = os.environ.get("BENCH_KERNEL", "auto").strip().lower() or "auto"
    if value not in KERNELS:
        raise ConfigError(f"BENCH_KERNEL={value!r} is not a kernel; use one of {', '.join(KERNELS)}")
    return value


def kernel():
    """The compiled module to use on the CPU, or ``None`` for the PyTorch loops."""
    choice = requested()
    if choice == "torch":
        return None
    if _module is None and _failure is None:
        _build()
    if _module is None and choice == "native":
        raise ConfigError(f"BENCH_KERNEL=native, but the compiled recurrence could not be built: {_failure}; "
                          "install a C++ compiler and the Python headers, or set BENCH_KERNEL=torch")
    return _module


def status(on_cpu: bool = True) -> dict:
    """Which loops the fast path uses on the CPU (or, ``on_cpu=False``, on an accelerator), and
    why: result.json's ``recurrence_kernel``. Builds the compiled loops if they are wanted, and
    raises like :func:`kernel` when ``BENCH_KERNEL=native`` cannot have them."""
    choice = requested()
    if not on_cpu:
        return {"kernel": "torch", "reason": "the compiled loops are CPU-only"}
    if kernel() is not None:                # BENCH_KERNEL=native that cannot build is refused here
        return {"kernel": "native", "reason": f"BENCH_KERNEL={choice}: compiled from {SOURCE.name}"}
    if choice == "torch":
        return {"kernel": "torch", "reason": "BENCH_KERNEL=torch"}
    return {"kernel": "torch", "reason": f"the compiled recurrence could not be built: {_failure}"}


def _folder() -> Path:
    """Where the library is built: one folder per interpreter and torch version, so that
    environments sharing a home folder (a cluster's nodes) do not rebuild each other's."""
    import torch

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                         "torch_extensions")
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}"
    return Path(root) / f"{NAME}-{tag}"


def _fingerprint() -> str:
    import torch

    text = "\n".join([SOURCE.read_text(), *CFLAGS, torch.__version__, sys.version])
    return hashlib.sha256(text.encode()).hexdigest()


def _built(library: Path, stamp: Path, want: str) -> bool:
    return library.exists() and stamp.exists() and stamp.read_text() == want


def _import(library: Path):
    spec = importlib.util.spec_from_file_location(NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(folder: Path, stamp: Path) -> None:
    # torch's own build lock is a file that a killed build leaves behind, and every later build
    # then waits for it forever; whoever holds bench's lock alone knows that one is stale
    (folder / "lock").unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    print("bench: building the compiled recurrence (once; about a minute) ...", file=sys.stderr)
    # torch's extension loader warns about CUDA_HOME on a machine without CUDA; this is a CPU build
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load

    with contextlib.redirect_stdout(io.StringIO()):
        load(NAME, [str(SOURCE)], extra_cflags=CFLAGS, build_directory=str(folder))


def _build() -> None:
    """Load the library, building it first unless the folder holds one built from this source
    with these flags for this torch (its stamp says so)."""
    global _module, _failure
    try:
        folder = _folder()
        folder.mkdir(parents=True, exist_ok=True)
        stamp, library, want = folder / "built-from.sha256", folder / f"{NAME}.so", _fingerprint()
        with open(folder.parent / f"{folder.name}.flock", "a") as held:
            # readers share this lock, a build holds it alone; it dies with its process
            fcntl.flock(held, fcntl.LOCK_SH)
            if not _built(library, stamp, want):
                fcntl.flock(held, fcntl.LOCK_EX)
                if not _built(library, stamp, want):      # nobody built it while this one waited
                    _compile(folder, stamp)
                    stamp.write_text(want)
            _module = _import(library)              # the usual case: no compiler, no ninja, 0.1 s
    except Exception as exc:  # noqa: BLE001 - any build failure means the PyTorch loops
        _failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:300]
        if requested() == "auto":
            print(f"bench: using the PyTorch recurrence loops (same numbers, slower): the compiled ones could not "
                  f"be built ({_failure}); BENCH_KERNEL=torch silences this", file=sys.stderr)

"""Keep freed memory in the process instead of returning it to the OS (glibc's ``mallopt``).

By default glibc serves every allocation above a threshold (128 KB, raised on the fly up to 32 MB)
with its own ``mmap`` and unmaps it when freed, and trims the heap's free top; a training step
allocates its activation buffers afresh each time, so every step touches new pages and pays a
page fault per 4 KB. Measured here (copying T = 100, batch 20, 1 thread, 30 steps):
scuRNN 1,806 faults and 38.7 ms per step by default, 0.4 faults and 27.4 ms with the settings
below; LSTM 174 faults and 13.7 ms against 0 and 9.9 ms; one time-major copy of pixel MNIST's
36 MB buffer 26 ms with a 32 MB threshold and 4 ms with 256 MB. No Python library sets this, so
it is done by hand through ctypes.

The cost: a process keeps up to ``TRIM`` bytes of freed memory mapped, so its resident size stays
near its peak instead of falling after each step.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's malloc.h
# glibc 2.36 takes 1 GB; older ones refuse more than 32 MB (their documented maximum on 64-bit).
# pixel MNIST's buffers (batch 50 x 784 steps x 232 floats) are 36 MB each
MMAP_CHOICES = (1 << 30, 32 << 20)
TRIM = 1 << 30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_done: str | None = None


def keep_freed_memory() -> str:
    """Set glibc's thresholds once per process (unless the user set any); returns what was done,
    for result.json and ``bench speed``."""
    global _done
    if _done is None:
        _done = _apply()
    return _done


def _apply() -> str:
    given = [name for name in USER_SETTINGS if name in os.environ]
    if given:
        return f"left as the environment sets it ({', '.join(given)})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "left as is: not glibc"
    mmap = next((size for size in MMAP_CHOICES if mallopt(M_MMAP_THRESHOLD, size) == 1), None)
    if mmap is None or mallopt(M_TRIM_THRESHOLD, TRIM) != 1:
        return "left as is: glibc refused the thresholds"
    return f"glibc mmap threshold {mmap >> 20} MB, trim threshold {TRIM >> 30} GB (bench's default)"

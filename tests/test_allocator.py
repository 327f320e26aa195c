"""bench/allocator.py: freed activation buffers stay in the process (no page faults per step; the
oracle is the kernel's own fault count, with and without the setting), and the user's own malloc
settings win. result.json's record of it: test_fastpath_native.py."""
import os
import platform
import subprocess
import sys

import pytest

# scuRNN's training step at the copying shape (T = 120 steps, batch 20): minor page faults per step
FAULTS = """
import resource, sys
import torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from bench.allocator import keep_freed_memory
    print(keep_freed_memory(), file=sys.stderr)
from bench.speed_models import build, model_specs
spec = next(s for s in model_specs(["scurnn"], "copying", None, None, False) if s["name"] == "scurnn")
model, opt = build(spec, torch.device("cpu"))
x, y = torch.randn(20, 120, spec["d_input"]), torch.randn(20, 120, spec["d_output"])
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

GLIBC = platform.libc_ver()[0] == "glibc"


def _faults(mode: str, **env) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip()), done.stderr.strip().splitlines()[-1] if mode == "keep" else ""


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_freed_buffers_are_reused_without_page_faults():
    default, _ = _faults("default")
    kept, said = _faults("keep")
    assert default >= 500, f"the default allocator should fault in the step's fresh buffers, got {default} a step"
    assert kept * 10 <= default, f"with the thresholds set the step reuses its buffers: {kept} against {default}"
    assert said.startswith("glibc mmap threshold") and said.endswith("trim threshold 1 GB (bench's default)")


def test_the_users_malloc_settings_win(monkeypatch):
    """With any of the user's settings in the environment bench calls no mallopt at all."""
    from bench import allocator

    def no_libc(*args, **kwargs):
        raise AssertionError("mallopt must not be reached")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    for name in allocator.USER_SETTINGS:
        monkeypatch.setenv(name, "0")
        assert allocator._apply() == f"left as the environment sets it ({name})"
        monkeypatch.delenv(name)

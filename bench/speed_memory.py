"""``bench speed``'s peak memory of one training step, measured in a fresh process per model
(the measure is described in bench/speed.py's module docstring)."""
from __future__ import annotations

import json
import subprocess
import sys

import torch
import torch.nn.functional as F

from bench.speed_models import build


def memory_probe(spec: dict, T: int, B: int, device: str, threads: int) -> dict:
    """Peak memory of one training step of ``spec`` in a fresh process (see the module doc)."""
    code = "import json, sys; from bench.speed_memory import _probe_main; _probe_main(json.loads(sys.argv[1]))"
    arg = json.dumps({"spec": spec, "T": T, "B": B, "device": device, "threads": threads})
    proc = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["probe failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: set the peak RSS (VmHWM) to the current RSS, so that importing torch (whose
    transient peak is larger than a small model's step) does not hide the step's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024      # bytes on macOS, KiB on Linux


def _probe_main(args: dict) -> None:
    """One training step in this fresh process: the peak memory of its forward + backward
    (activations, autograd buffers and gradients: ``fwd_bwd_mb``) and of the whole step with
    the optimizer's first update (its state is allocated then: ``train_mb``), both above the
    memory in use before the step (model and data)."""
    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    spec, T, B = args["spec"], args["T"], args["B"]
    model, opt = build(spec, device)
    x = torch.randn(B, T, spec["d_input"], device=device)
    y = torch.randn(B, T, spec["d_output"], device=device)

    def forward_backward():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()

    def update():
        opt.step()
        model.post_step()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward_backward()
        torch.cuda.synchronize(device)
        fwd_bwd = torch.cuda.max_memory_allocated(device) - base
        update()
        torch.cuda.synchronize(device)
        out = {"train_mb": (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20, "fwd_bwd_mb": fwd_bwd / 2 ** 20,
               "measure": "cuda_max_allocated"}
    elif _reset_peak_rss() and _rss_mb("VmHWM") is not None:
        base = _rss_mb("VmRSS")
        forward_backward()
        fwd_bwd = _rss_mb("VmHWM") - base
        update()
        out = {"train_mb": _rss_mb("VmHWM") - base, "fwd_bwd_mb": fwd_bwd, "measure": "peak_rss_growth"}
    else:                                                   # no /proc: the peak since start (may hide small steps)
        base = _maxrss_mb()
        forward_backward()
        fwd_bwd = _maxrss_mb() - base
        update()
        out = {"train_mb": _maxrss_mb() - base, "fwd_bwd_mb": fwd_bwd, "measure": "ru_maxrss_growth"}
    print(json.dumps(out))

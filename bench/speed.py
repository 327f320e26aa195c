"""``bench speed``: training and inference throughput, peak memory and the ratio to LSTM.

    bench speed --task timit --params 83k                   # every registered model, one table
    bench speed --model scurnn --model lstm --seq-len 100,200,400,800 --batch 32

For every model at a matched parameter budget (the hidden size ``bench params`` picks, with the
paper's options for the task) and the task's input/output sizes, on synthetic tensors (no data
files are read):

* training throughput: sequences/s of one forward + backward + optimizer step (the model's
  per-group optimizers as ``bench run`` builds them, then ``post_step``), MSE loss on all steps;
* inference throughput: sequences/s of a forward pass under ``torch.no_grad``;
* the ratio of both to the matched-budget LSTM (``torch.nn.LSTM``), timed in the same process,
  interleaved with the other models round by round, after warm-up, median of ``--repeats``;
* peak memory of one training step: on CPU, in a fresh subprocess per model, the peak resident
  set size during its first training step minus the resident size before it (Linux: VmHWM
  after resetting it through /proc/self/clear_refs; elsewhere the growth of ``ru_maxrss``, a
  lower bound). It counts autograd buffers, optimizer state and allocator slack; on CUDA it
  is ``torch.cuda.max_memory_allocated`` above the resident model and data. The same peak up
  to the end of the backward pass (``fwd_bwd_peak_mb``) is the activation memory: what the
  fused recurrences save against their plain autograd loops (``--plain``). RSS, because
  tracemalloc does not see torch's allocations;
* a floor for the recurrence: its GEMMs (T sequential forward steps, T sequential backward
  steps, one weight-gradient GEMM over all steps) timed alone at the model's shapes; and a
  GEMM floor for the whole step, adding the input-projection and readout GEMMs' FLOPs at the
  measured bulk GEMM rate (an estimate: it assumes a readout on the full real state);
* with several ``--seq-len`` or ``--batch`` values, the slope of time against T (or B) and
  whether it is linear (least squares, R^2).

``--harness`` (:func:`bench.speed_harness.harness_table`) instead times ``bench run``'s own training loop against
the bare step, per model, at the run's own sizes: what Lightning, the wrapper optimizer, the
callbacks and logging add to a training step.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch

from bench.allocator import keep_freed_memory
from bench.models import fastpath_native
from bench.speed_memory import memory_probe
from bench.speed_models import build, infer_step, model_specs, train_step

REFERENCE = "lstm"
DEFAULT_SHAPE = {"timit": (200, 32)}      # (T, B) when --seq-len/--batch are not given


# -- timing -----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of every function, round-robin: each round calls each function once."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - start)
    return times


def recurrent_gemm(model) -> tuple[int, int] | None:
    """(rows, cols) of the per-step recurrent matrix product h_{t-1} @ W (real numbers), or None."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.LSTM):
            return mod.hidden_size, 4 * mod.hidden_size
        if isinstance(mod, torch.nn.GRU):
            return mod.hidden_size, 3 * mod.hidden_size
    if hasattr(model, "recurrent_matrix"):
        with torch.no_grad():
            W = model.recurrent_matrix()
        k = 2 if W.is_complex() else 1
        return k * W.shape[-2], k * W.shape[-1]
    return None


def gemm_floor(B: int, T: int, d_in: int, d_out: int, device: torch.device, repeats: int) -> dict:
    """Time of the recurrence's GEMMs alone: T steps (B, d_in) @ (d_in, d_out) forward, T steps
    (B, d_out) @ (d_out, d_in) backward, and one (d_in, T*B) @ (T*B, d_out) weight gradient."""
    g = torch.Generator(device="cpu").manual_seed(0)
    W = (torch.randn(d_in, d_out, generator=g) / d_in ** 0.5).to(device)
    h = torch.randn(B, d_in, generator=g).to(device)
    gz = torch.randn(B, d_out, generator=g).to(device)
    Hs = torch.randn(T * B, d_in, generator=g).to(device)
    Gs = torch.randn(T * B, d_out, generator=g).to(device)
    out_f, out_b = torch.empty(B, d_out, device=device), torch.empty(B, d_in, device=device)

    def fwd():
        for _ in range(T):
            torch.addmm(gz, h, W, out=out_f)

    def bwd():
        for _ in range(T):
            torch.addmm(h, gz, W.T, out=out_b)

    def dW():
        Hs.T @ Gs

    t = {k: statistics.median(v) for k, v in time_interleaved({"fwd": fwd, "bwd": bwd, "dW": dW}, repeats, 1, device).items()}
    flops_step = 2 * B * d_in * d_out
    return {"gemm": [d_in, d_out], "fwd_s": t["fwd"], "bwd_s": t["bwd"], "dW_s": t["dW"],
            "train_s": t["fwd"] + t["bwd"] + t["dW"], "infer_s": t["fwd"],
            "train_gflop": 3 * T * flops_step / 1e9, "step_gflops": T * flops_step / t["fwd"] / 1e9,
            "bulk_gflops": T * flops_step / t["dW"] / 1e9}


# -- memory (fresh subprocess per model) ------------------------------------------------------
def speed_table(names: list[str], task: str, *, budget: int | None = None, hidden: int | None = None,
                seq_lens: list[int], batches: list[int], threads: int, repeats: int = 7, warmup: int = 2,
                device: str = "cpu", plain: bool = False, memory: bool = True, floor: bool = True,
                log=print) -> dict:
    """Measure every model at every (T, B); returns the JSON-able report."""
    torch.set_num_threads(threads)
    allocator = keep_freed_memory()                 # as bench run trains
    dev = torch.device(device)
    if REFERENCE not in names:
        names = [*names, REFERENCE]
    specs = model_specs(names, task, budget, hidden, plain)
    report = {"task": task, "d_input": specs[0]["d_input"], "d_output": specs[0]["d_output"], "device": str(dev),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
              "cpu": platform.processor() or platform.machine(), "repeats": repeats, "warmup": warmup,
              "loadavg_start": loadavg(), "memory_measure": None, "rows": [],
              "recurrence_kernel": fastpath_native.status(on_cpu=dev.type == "cpu"), "allocator": allocator}
    for T in seq_lens:
        for B in batches:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(B, T, report["d_input"], generator=g).to(dev)
            y = torch.randn(B, T, report["d_output"], generator=g).to(dev)
            built = {s["label"]: build(s, dev) for s in specs}
            fns = {}
            for label, (model, opt) in built.items():
                fns[("train", label)] = lambda model=model, opt=opt: train_step(model, opt, x, y)
                fns[("infer", label)] = lambda model=model: infer_step(model, x)
            log(f"T={T} B={B}: timing {len(specs)} models x {repeats} interleaved rounds ...")
            med = {k: statistics.median(v) for k, v in time_interleaved(fns, repeats, warmup, dev).items()}
            ref_train, ref_infer = med[("train", REFERENCE)], med[("infer", REFERENCE)]
            floors = {}
            for s in specs:
                model = built[s["label"]][0]
                row = {"model": s["label"], "n": s["n"], "params": s["params"], "T": T, "B": B,
                       "options": s["options"],
                       "train_ms": 1e3 * med[("train", s["label"])], "infer_ms": 1e3 * med[("infer", s["label"])],
                       "train_seq_s": B / med[("train", s["label"])], "infer_seq_s": B / med[("infer", s["label"])],
                       "train_vs_lstm": ref_train / med[("train", s["label"])],
                       "infer_vs_lstm": ref_infer / med[("infer", s["label"])]}
                shape = recurrent_gemm(model) if floor else None
                if shape is not None:
                    if shape not in floors:
                        floors[shape] = gemm_floor(B, T, *shape, dev, max(3, repeats // 2))
                    fl = floors[shape]
                    # plus the bulk GEMMs around the recurrence, at the weight-gradient GEMM's rate:
                    # input projection (forward, weight gradient) and readout (forward, both gradients)
                    bulk = 2 * B * T * (2 * report["d_input"] * shape[1] + 3 * shape[0] * report["d_output"])
                    row.update(floor_train_ms=1e3 * fl["train_s"], floor_infer_ms=1e3 * fl["infer_s"],
                               floor_gemm_ms=1e3 * fl["train_s"] + 1e3 * bulk / (fl["bulk_gflops"] * 1e9),
                               recurrence_gflop=fl["train_gflop"], bulk_gflop=bulk / 1e9, gemm=fl["gemm"],
                               step_gflops=fl["step_gflops"], bulk_gflops=fl["bulk_gflops"])
                if memory:
                    mem = memory_probe(s, T, B, device, threads)
                    row["train_peak_mb"] = mem.get("train_mb")
                    row["fwd_bwd_peak_mb"] = mem.get("fwd_bwd_mb")
                    report["memory_measure"] = mem.get("measure", report["memory_measure"])
                    if "error" in mem:
                        row["memory_error"] = mem["error"]
                report["rows"].append(row)
            del built, fns
    report["loadavg_end"] = loadavg()
    report["scaling"] = scaling(report["rows"])
    return report


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line y = a + b x with R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return {"slope": b, "intercept": a, "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def scaling(rows: list[dict]) -> list[dict]:
    """Per model: train time against T at each B, and against B at each T (when several were run)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        for axis, other in (("T", "B"), ("B", "T")):
            for fixed in sorted({r[other] for r in mine}):
                pts = sorted((r[axis], r["train_ms"]) for r in mine if r[other] == fixed)
                if len(pts) < 2:
                    continue
                fit = _fit([p[0] for p in pts], [p[1] for p in pts])
                out.append({"model": model, "axis": axis, other: fixed, "points": len(pts),
                            "ms_per_unit": fit["slope"], "intercept_ms": fit["intercept"], "r2": fit["r2"],
                            "linear": fit["r2"] >= 0.99})
    return out


def print_report(report: dict, out=print) -> None:
    out(f"bench speed: task {report['task']} (m={report['d_input']}, p={report['d_output']}), device "
        f"{report['device']}, {report['threads']} threads, torch {report['torch']}, fused recurrence: "
        f"{report['recurrence_kernel']['kernel']} loops, allocator: {report['allocator']}, median of {report['repeats']} "
        f"interleaved rounds after {report['warmup']} warm-up; load average {report['loadavg_start']} -> "
        f"{report['loadavg_end']}")
    out(f"{'model':<14} {'n':>5} {'params':>8} {'T':>5} {'B':>4} {'train seq/s':>11} {'xLSTM':>6} "
        f"{'infer seq/s':>11} {'xLSTM':>6} {'train ms':>9} {'rec floor':>9} {'GEMM floor':>10} {'peak MB':>8} "
        f"{'fwd+bwd MB':>10}")
    for r in report["rows"]:
        floor = (f"{r['floor_train_ms']:9.1f} {r['floor_gemm_ms']:10.1f}" if "floor_train_ms" in r
                 else f"{'-':>9} {'-':>10}")
        mem = f"{r['train_peak_mb']:8.1f}" if r.get("train_peak_mb") is not None else f"{'-':>8}"
        mem += f" {r['fwd_bwd_peak_mb']:10.1f}" if r.get("fwd_bwd_peak_mb") is not None else f" {'-':>10}"
        out(f"{r['model']:<14} {r['n']:>5} {r['params']:>8,} {r['T']:>5} {r['B']:>4} {r['train_seq_s']:11.1f} "
            f"{r['train_vs_lstm']:6.2f} {r['infer_seq_s']:11.1f} {r['infer_vs_lstm']:6.2f} {r['train_ms']:9.1f} "
            f"{floor} {mem}")
    if report["memory_measure"] == "peak_rss_growth":
        out("peak MB: peak RSS during the first training step of a fresh process, minus its RSS before it "
            "(model and data already resident); fwd+bwd MB: the same peak up to the end of the backward pass "
            "(activations, autograd buffers, gradients; before the optimizer allocates its state)")
    elif report["memory_measure"] == "ru_maxrss_growth":
        out("peak MB: growth of ru_maxrss during the first training step of a fresh process (a lower bound); "
            "fwd+bwd MB: the same up to the end of the backward pass")
    elif report["memory_measure"]:
        out("peak MB: torch.cuda.max_memory_allocated during one training step, above the resident model and data; "
            "fwd+bwd MB: the same up to the end of the backward pass")
    out("rec floor: the recurrence's GEMMs alone, timed at the model's shapes (T forward steps + T backward steps "
        "+ one weight-gradient GEMM); GEMM floor: plus the input projection and readout GEMMs at the measured "
        "bulk GEMM rate (ms per training step)")
    fast = {(r["model"], r["T"], r["B"]): r for r in report["rows"]}
    for r in report["rows"]:
        q = fast.get((r["model"][:-6], r["T"], r["B"])) if r["model"].endswith("-plain") else None
        if q is not None:
            out(f"{q['model']}: fast path {r['train_ms'] / q['train_ms']:.2f}x the training throughput of its plain "
                f"autograd version, {r['infer_ms'] / q['infer_ms']:.2f}x for inference (T={q['T']}, B={q['B']})")
            if q.get("fwd_bwd_peak_mb") is not None and r.get("fwd_bwd_peak_mb") is not None:
                out(f"{q['model']}: forward+backward peak {q['fwd_bwd_peak_mb']:.1f} MB fused, "
                    f"{r['fwd_bwd_peak_mb']:.1f} MB plain (T={q['T']}, B={q['B']})")
    if report["scaling"]:
        out("scaling of the training time (least squares):")
        for s in report["scaling"]:
            fixed = f"B={s['B']}" if s["axis"] == "T" else f"T={s['T']}"
            out(f"  {s['model']:<14} vs {s['axis']} at {fixed}: {s['ms_per_unit']:.3f} ms per unit of "
                f"{s['axis']}, intercept {s['intercept_ms']:.1f} ms, R^2 {s['r2']:.4f} "
                f"({'linear' if s['linear'] else 'not linear'})")

"""``bench speed --harness``: ``bench run``'s own training loop (Lightning, the wrapper optimizer,
the callbacks, logging, the progress bar) timed against the bare training step of the same model,
alternating step by step in one process. The bare step is ``bench speed``'s (bench/speed.py)."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from bench.speed import loadavg


def harness_row(name: str, task: str, *, seq_len: int | None, batch: int | None, threads: int | None,
                steps: int, warmup: int, hidden: int | None = None, progress_bar: bool = True) -> dict:
    """Seconds per training step of ``bench run``'s Lightning loop against the bare step, one model.

    The loop is the one ``bench run`` trains with, built by the same functions
    (``bench.run.build_module`` and ``build_trainer``: SequenceModule, GroupOptimizer, the
    checkpoint, preemption and diagnostics callbacks, the CSV logger, the progress bar unless
    ``progress_bar=False``), on the task's own data; W&B is off. A callback at every
    ``on_train_batch_start`` first runs one bare step (forward, the task's loss, backward,
    optimizer step, ``post_step``) of a second copy of the model on the same batch, then
    starts the clock for the loop's step: so bare step and loop step alternate, and a loop
    interval is everything Lightning does from one batch to the next (hooks, logging, data).
    Validation runs only after the last timed step. The first ``warmup`` steps of both are
    dropped.
    """
    import contextlib
    import tempfile

    from lightning.pytorch.callbacks import Callback

    from bench.allocator import keep_freed_memory
    from bench.config import RunConfig, resolve
    from bench.run import _quiet_lightning, build_module, build_trainer, set_threads
    from bench.tasks import build_task
    from bench.tracking import make_loggers

    total = warmup + steps + 1              # + 1: the interval after the last timed step start
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        cfg = resolve(RunConfig(model=name, task=task, seq_len=seq_len, batch_size=batch, n_hidden=hidden,
                                max_steps=total, val_every=total, threads=threads, quiet=not progress_bar,
                                wandb="disabled", runs_dir=tmp, device="cpu"))
        used = set_threads(cfg)
        keep_freed_memory()                     # what bench run does before training
        _quiet_lightning()
        task_obj = build_task(cfg.task, seq_len=cfg.seq_len, data_dir=cfg.data_dir, data_seed=cfg.data_seed)
        datamodule = task_obj.datamodule(cfg.batch_size)
        module = build_module(cfg, task_obj)
        bare = build_module(cfg, task_obj)          # the same seed: the same initial weights
        bare_model, bare_opt = bare.model, bare.configure_optimizers()

        def bare_step(batch):
            bare_opt.zero_grad(set_to_none=True)
            task_obj.loss(bare_model(batch[0]), batch).backward()
            bare_opt.step()
            bare_model.post_step()

        class Alternate(Callback):
            def __init__(self):
                self.loop, self.bare, self.global_steps, self.shape = [], [], [], None
                self.mark = None

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                now = time.perf_counter()
                if self.mark is not None:
                    self.loop.append(now - self.mark)
                self.global_steps.append(int(trainer.global_step))
                self.shape = tuple(batch[0].shape)
                start = time.perf_counter()
                bare_step(batch)
                self.bare.append(time.perf_counter() - start)
                self.mark = time.perf_counter()

        timer = Alternate()
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        loggers, _, _ = make_loggers(cfg, run_dir)
        trainer, _, _ = build_trainer(cfg, task_obj, run_dir, loggers, [timer])
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            trainer.fit(module, datamodule=datamodule)
    loop, bare_t = timer.loop[warmup:], timer.bare[warmup:warmup + len(timer.loop[warmup:])]
    B, T = timer.shape[0], timer.shape[1]
    return {"model": name, "n": cfg.n_hidden, "params": module.model.count_params(), "T": T, "B": B,
            "seq_len": cfg.seq_len, "threads": used["count"], "threads_reason": used["reason"],
            "timed_steps": len(loop),
            "optimizer_steps": int(trainer.global_step), "global_steps": timer.global_steps,
            "bare_ms": 1e3 * statistics.fmean(bare_t), "loop_ms": 1e3 * statistics.fmean(loop),
            "bare_median_ms": 1e3 * statistics.median(bare_t), "loop_median_ms": 1e3 * statistics.median(loop),
            "ratio": sum(loop) / sum(bare_t), "ratio_median": statistics.median(loop) / statistics.median(bare_t),
            "progress_bar": progress_bar}


def harness_table(names: list[str], task: str, *, seq_len: int | None = None, batch: int | None = None,
                  hidden: int | None = None, threads: int | None = None, steps: int = 60, warmup: int = 10,
                  progress_bar: bool = True, log=print) -> dict:
    """:func:`harness_row` for every model; the JSON-able report."""
    report = {"mode": "harness", "task": task, "steps": steps, "warmup": warmup, "torch": torch.__version__,
              "python": platform.python_version(), "loadavg_start": loadavg(), "rows": []}
    for name in names:
        log(f"{name}: {warmup} + {steps} training steps of the bench run loop, each after one bare step ...")
        report["rows"].append(harness_row(name, task, seq_len=seq_len, batch=batch, threads=threads, steps=steps,
                                          warmup=warmup, hidden=hidden, progress_bar=progress_bar))
    report["threads"] = report["rows"][0]["threads"] if report["rows"] else torch.get_num_threads()
    report["loadavg_end"] = loadavg()
    return report


def print_harness_report(report: dict, out=print) -> None:
    out(f"bench speed --harness: task {report['task']}, {report['threads']} threads, torch {report['torch']}, "
        f"{report['steps']} timed steps after {report['warmup']}, bare and loop steps alternating; load average "
        f"{report['loadavg_start']} -> {report['loadavg_end']}")
    out(f"{'model':<10} {'n':>5} {'params':>8} {'T':>5} {'B':>4} {'bare ms':>8} {'loop ms':>8} {'loop/bare':>9} "
        f"{'median ratio':>12}")
    for r in report["rows"]:
        out(f"{r['model']:<10} {r['n']:>5} {r['params']:>8,} {r['T']:>5} {r['B']:>4} {r['bare_ms']:8.1f} "
            f"{r['loop_ms']:8.1f} {r['ratio']:9.2f} {r['ratio_median']:12.2f}")
    out("bare: forward, the task's loss, backward, optimizer step, post_step; loop: one step of bench run's "
        "Lightning loop (same module, optimizer, callbacks, logger and progress bar), batch start to batch start, "
        "validation excluded; loop/bare: mean over the timed steps, median ratio: of the medians")


# -- the table --------------------------------------------------------------------------------

"""The run function: one validated config -> one trained model and one result.json.

``bench run``, every sweep trial and the tests call :func:`run` (DESIGN.md principle 1).
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path

from bench.config import RunConfig, resolve
from bench.curves import read_curves, summarise
from bench.preemption import PREEMPT_CKPT, preemption_callback, resume_checkpoint
from bench.provenance import code_version, hardware, library_versions
from bench.atomic import atomic_write_text
from bench.results import EXIT_CODES, writable_folder, write_result
from bench.secrets import mask_text

ACCELERATORS = {"auto": "auto", "cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "mps": "mps"}


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work (Lightning would end in a
    traceback). Checked where the run trains, not in resolve(): a login node without a GPU may
    submit GPU work."""
    import torch

    from bench.errors import ConfigError

    have = {"cpu": True, "auto": True, "gpu": torch.cuda.is_available(), "cuda": torch.cuda.is_available(),
            "mps": torch.backends.mps.is_available()}
    if not have[device]:
        found = [d for d in ("cuda", "mps") if have[d]]
        raise ConfigError(f"--device {device}: this machine has no {device.upper() if device != 'gpu' else 'GPU'} "
                          f"that torch can use (devices here: cpu{''.join(', ' + d for d in found)}); "
                          f"use --device auto or cpu, or run on a GPU node")


def make_run_dir(cfg: RunConfig) -> Path:
    base = writable_folder(Path(cfg.runs_dir) / cfg.task / cfg.model, "runs directory")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = base / (f"{stamp}-{cfg.config_hash()[:8]}-seed{cfg.seed}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {base}")


def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    # a resumed run continues in its own folder, whose checkpoints are what it resumes from
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


# The thread count bench chose for a CPU run in this process (None: it has not chosen), so that a
# second run in the same process does not mistake bench's own choice for a caller's.
_CHOSEN_THREADS: list = [None]
DEFAULT_CPU_THREADS = 1
DEFAULT_THREADS_REASON = ("bench's default for CPU training (--threads N to change): on 2 cores, 2 threads were up "
                          "to 1.6x faster only while no other process ran, and 1.3-7x slower when one did")


def choose_threads(requested: int | None, *, on_cpu: bool, omp_env: str | None, current: int, usable: int,
                   chosen_before: int | None = None) -> tuple[int, str]:
    """The torch intra-op thread count of a run, and why (result.json records both).

    In order: ``--threads N``; ``OMP_NUM_THREADS`` (torch started with it); a count set in this
    process before the run (``current`` differs from the ``usable`` cores and is not bench's
    own earlier choice: a sweep worker's share of the cores, or the caller's); on CPU,
    ``DEFAULT_CPU_THREADS`` (1); on a GPU, torch's count. Measured with ``bench speed
    --harness`` (bench run's own loop) on the 2-core machine the leaderboard runs on: 2 threads
    made a training step up to 1.6x faster while the second core stayed idle, and 1.3x to 7x
    slower whenever another process used it (45x under heavy load), for 22k- to 276k-parameter
    models alike; the recurrences' small per-step products leave little to share.
    """
    if requested:
        return requested, "--threads"
    if omp_env and omp_env.strip():
        return current, f"OMP_NUM_THREADS={omp_env.strip()}"
    if current != usable and current != chosen_before:
        return current, (f"kept the {current} threads torch had before the run, not the {usable} usable cores "
                         f"(set in this process, e.g. a sweep worker's share of the cores)")
    if not on_cpu:
        return current, "torch's default (the run trains on a GPU)"
    return min(DEFAULT_CPU_THREADS, usable), DEFAULT_THREADS_REASON


def trains_on_cpu(cfg: RunConfig) -> bool:
    """Whether Lightning will train this run on the CPU."""
    import torch

    return cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()
                                   and not torch.backends.mps.is_available())


def set_threads(cfg: RunConfig) -> dict:
    """Set torch's intra-op threads for the run (:func:`choose_threads`); returns what
    result.json records: ``{"count": n, "reason": ...}``."""
    import os

    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        usable = os.cpu_count() or 1
    on_cpu = trains_on_cpu(cfg)
    count, reason = choose_threads(cfg.threads, on_cpu=on_cpu, omp_env=os.environ.get("OMP_NUM_THREADS"),
                                   current=torch.get_num_threads(), usable=usable,
                                   chosen_before=_CHOSEN_THREADS[0])
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    # a count bench set (--threads or its default) is no caller's choice for the next run here
    _CHOSEN_THREADS[0] = count if reason in ("--threads", DEFAULT_THREADS_REASON) else None
    return {"count": torch.get_num_threads(), "reason": reason}


def build_module(cfg: RunConfig, task):
    """Seed everything with ``cfg.seed``, build the model and wrap it with the task: the
    LightningModule a run trains (``bench speed --harness`` times the same one)."""
    import lightning.pytorch as pl

    from bench.models import build_model
    from bench.module import SequenceModule

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg.model, task.d_input, task.d_output, cfg.n_hidden, **cfg.model_options)
    return SequenceModule(model, task, cfg.opts)


def build_trainer(cfg: RunConfig, task, run_dir: Path, loggers: list, callbacks: list | None = None):
    """The Trainer a run trains with, with its callbacks (extra ``callbacks`` after the
    harness's own); returns ``(trainer, checkpoint callback, preemption callback)``.
    ``bench speed --harness`` times this same Trainer."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

    from bench.module import FreezeStartupObjects

    preemption = preemption_callback(run_dir)
    monitor = f"val/{task.metric}"
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), monitor=monitor, mode=task.metric_mode,
                                 save_last=True, save_top_k=1, filename="best")
    from bench.diagnostics import Diagnostics

    # `preemption` must stay after `checkpoint`: both are Checkpoint callbacks, which Lightning runs
    # last and in this order, so a preemption at a validation's end sees its best-model update
    cbs = [checkpoint, preemption, Diagnostics(run_dir), FreezeStartupObjects()] + list(callbacks or [])
    if not cfg.quiet:
        cbs.append(TQDMProgressBar(refresh_rate=10))
    val_every = min(cfg.val_every, cfg.max_steps) if cfg.max_steps else cfg.val_every
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    # Under SLURM, submitit (bench/slurm.py) requeues; Lightning's own requeue would race it.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    trainer = pl.Trainer(
        plugins=plugins, accelerator=ACCELERATORS[cfg.device], devices=1, max_steps=cfg.max_steps or -1,
        max_epochs=cfg.max_epochs if cfg.max_epochs else (-1 if cfg.max_steps else None),
        val_check_interval=val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        gradient_clip_val=cfg.grad_clip, logger=loggers, callbacks=cbs, log_every_n_steps=10,
        enable_progress_bar=not cfg.quiet, enable_model_summary=not cfg.quiet,
        default_root_dir=str(run_dir),
    )
    return trainer, checkpoint, preemption


def run(cfg: RunConfig, *, callbacks: list | None = None, resume_dir: str | Path | None = None) -> dict:
    """Train ``cfg.model`` on ``cfg.task``, evaluate on the test split, write result.json.

    Validation of the config happens before any work. Returns the result dict (also written
    to ``<run_dir>/result.json``). Extra Lightning ``callbacks`` (e.g. a sweep's pruning
    callback) are appended to the harness's own. With ``resume_dir``, training continues in
    that folder from its preemption (or last) checkpoint.

    SIGTERM or SIGUSR1 during training saves ``checkpoints/preempt.ckpt`` at the end of the
    current step (or of the validation after it, or in progress) and returns
    ``{"status": "preempted", ...}`` without a result.json (the run is unfinished); resumed, the
    run continues to the same losses, validations, best checkpoint and test metrics.
    """
    from bench.tracking import finish_wandb

    try:
        return _run(cfg, callbacks=callbacks, resume_dir=resume_dir)
    finally:
        finish_wandb(exit_code=1)   # acts only on a W&B run left open: something raised (W&B: failed)


def _run(cfg: RunConfig, *, callbacks: list | None, resume_dir: str | Path | None) -> dict:
    if not cfg.resolved:
        cfg = resolve(cfg)
    from lightning.pytorch.loggers import CSVLogger

    from bench.allocator import keep_freed_memory
    from bench.models import fastpath_native
    from bench.tasks import build_task
    from bench.tracking import finish_wandb, make_loggers, result_summary

    check_device(cfg.device)
    if cfg.quiet:
        _quiet_lightning()
    if cfg.fallback and (cfg.scale == "paper" or not cfg.quiet):     # a sweep's quick trials stay quiet
        print(f"bench: note: {cfg.fallback}", file=sys.stderr)
    task = build_task(cfg.task, seq_len=cfg.seq_len, data_dir=cfg.data_dir, data_seed=cfg.data_seed)
    datamodule = task.datamodule(cfg.batch_size)  # data errors surface before the run dir exists
    datamodule.track_test = bool(cfg.track_test)
    # the fused recurrence's loops (result.json's recurrence_kernel), built before the run dir exists
    # and before training, so that a first build's note stays out of the progress bar
    kernel = fastpath_native.status(on_cpu=trains_on_cpu(cfg))
    run_dir, ckpt_path, earlier = _open_run_dir(cfg, resume_dir)

    threads, allocator = set_threads(cfg), keep_freed_memory()
    module = build_module(cfg, task)
    loggers, mode, wandb_id = make_loggers(cfg, run_dir, metric=task.metric, metric_mode=task.metric_mode)
    if ckpt_path is not None:   # a resumed part logs beside the earlier ones; read_curves joins them
        part = 1 + len(list(run_dir.glob("csv/part*/metrics.csv")))
        loggers[0] = CSVLogger(save_dir=str(run_dir), name="csv", version=f"part{part}")
    trainer, checkpoint, preemption = build_trainer(cfg, task, run_dir, loggers, callbacks)
    started = time.time()
    status, error, tests, pruned = _train_and_test(cfg, trainer, module, datamodule, checkpoint, preemption, ckpt_path)
    part_wall = time.time() - started
    step = preemption.saved_step or int(trainer.global_step)
    parts = earlier + [{"ended": status, "step": step, "wall_time_s": round(part_wall, 3)}]
    wall = sum(p["wall_time_s"] for p in parts)           # every part that stopped cleanly
    if status in ("preempted", "interrupted"):
        state = _stopped_part(run_dir, status, step, wall, parts)
        if preemption.submitit_handler is not None:
            preemption.submitit_handler()       # requeues the job and raises SystemExit
        return {**state, "run_dir": str(run_dir), "config": cfg.to_dict()}

    result = _result_record(cfg, task, module.model, run_dir, status=status, error=error, tests=tests,
                            global_step=int(trainer.global_step), wall=wall, parts=parts, checkpoint=checkpoint,
                            wandb={"mode": mode, "id": wandb_id}, threads=threads, kernel=kernel,
                            allocator=allocator)
    write_result(run_dir, result)
    finish_wandb(EXIT_CODES[status], summary=result_summary(result), status=status)   # W&B: a view of the file
    for leftover in (run_dir / "preempted.json", run_dir / "checkpoints" / PREEMPT_CKPT):
        leftover.unlink(missing_ok=True)    # superseded by result.json and last.ckpt
    if pruned is not None:
        raise pruned                        # the sweep marks the trial PRUNED; the record stays
    return result


def _open_run_dir(cfg: RunConfig, resume_dir: str | Path | None) -> tuple[Path, Path | None, list[dict]]:
    """(run folder, checkpoint to resume from, earlier parts): a new folder with config.json, or
    the folder of a run being resumed."""
    if resume_dir is None:
        run_dir = make_run_dir(cfg)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
        return run_dir, None, []
    run_dir = Path(resume_dir)
    return run_dir, resume_checkpoint(run_dir), _earlier_parts(run_dir)


def _train_and_test(cfg, trainer, module, datamodule, checkpoint, preemption, ckpt_path):
    """Fit, then test the final and the best weights unless the part stopped early. Returns
    (status, error, test metrics, the TrialPruned exception to re-raise or None)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bench.module import DivergedError

    tests: dict = {}
    try:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        except SIGTERMException:
            pass
        if preemption.saved_step is not None:
            return "preempted", None, tests, None
        if trainer.interrupted:
            return "interrupted", None, tests, None
        # logged as test/* (final weights) and best_ckpt_test/* (best checkpoint): result.json's
        # test_* and best_ckpt_test_*, the same names in the CSV, W&B and result.json
        try:
            module.test_split = "test"
            tests.update(trainer.test(module, datamodule=datamodule, verbose=not cfg.quiet)[0])
            if checkpoint.best_model_path:
                module.test_split = "best_ckpt_test"
                tests.update(trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path,
                                          verbose=False)[0])
        except SIGTERMException:   # after training: last.ckpt holds the final weights; a resume only tests
            return "interrupted", None, {}, None
    except DivergedError as exc:
        return "diverged", str(exc), tests, None
    except Exception as exc:
        if type(exc).__name__ != "TrialPruned":     # optuna's, raised by a sweep's pruning callback
            raise
        return "pruned", str(exc) or "pruned by the sweep's pruner", tests, exc
    return "completed", None, tests, None


def _stopped_part(run_dir: Path, status: str, step: int, wall: float, parts: list[dict]) -> dict:
    """A part stopped by a signal: preempted.json says how to go on; W&B gets what it overwrites."""
    from bench.tracking import finish_wandb

    state = {"status": status, "step": step, "checkpoint": _rel(str(resume_checkpoint(run_dir) or ""), run_dir),
             "wall_time_s": round(wall, 3), "resume": f"bench run --resume {run_dir}", "parts": parts}
    atomic_write_text(run_dir / "preempted.json", json.dumps(state, indent=2) + "\n")
    # the fields a finished part overwrites (a resumed W&B run keeps its summary)
    finish_wandb(EXIT_CODES[status], status=status, summary={
        "status": status, "global_step": step, "wall_time_s": state["wall_time_s"], "parts": parts})
    return state


def _result_record(cfg: RunConfig, task, model, run_dir: Path, *, status, error, tests, global_step, wall, parts,
                   checkpoint, wandb, threads, kernel, allocator) -> dict:
    """result.json's content: the resolved config, the metrics from the curves and the tests, and
    where everything is."""
    from bench.tracking import wandb_mode

    curves, curves_path = read_curves(run_dir)
    metrics = {**summarise(curves, task, task.metric_mode),
               **{k.replace("/", "_"): float(v) for k, v in tests.items()}}
    return {
        "result_version": 1,
        "status": status,
        "error": error,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "seed": cfg.seed,
        "model": cfg.model,
        "task": cfg.task,
        "n_hidden": cfg.n_hidden,
        "n_params": model.count_params(),
        "task_info": task.info(),
        "paper_row": _paper_row(cfg),
        "fallback": cfg.fallback,
        "metric": {"name": task.metric, "mode": task.metric_mode},
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()},
        "global_step": global_step,
        "wall_time_s": round(wall, 3),
        "seconds_per_step": round(wall / max(1, global_step), 5),
        "parts": parts,
        "curves": str(curves_path.relative_to(run_dir)) if curves_path else None,
        "checkpoints": {"best": _rel(checkpoint.best_model_path, run_dir),
                        "last": _rel(str(run_dir / "checkpoints" / "last.ckpt"), run_dir)},
        "wandb": {"mode": wandb["mode"], "requested": wandb_mode(cfg.wandb), "id": wandb["id"],
                  "dir": str(run_dir / "wandb") if wandb["mode"] != "disabled" else None},
        "code_version": code_version(),
        "library_versions": library_versions(),
        "hardware": hardware(),
        "threads": threads,
        "recurrence_kernel": kernel,
        "allocator": allocator,
        "command": mask_text(" ".join(sys.argv)) if sys.argv else None,
        "run_dir": str(run_dir),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _rel(path: str | None, run_dir: Path) -> str | None:
    """``path`` relative to the run folder (so a copied or moved folder stays whole); ``None``
    when there is no such file."""
    if not path or not Path(path).exists():
        return None
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _earlier_parts(run_dir: Path) -> list[dict]:
    """The parts before this one, as the last preemption recorded them: how each ended, at which
    step, in how many seconds (a part killed without a signal leaves no record; its time is not
    counted)."""
    try:
        state = json.loads((Path(run_dir) / "preempted.json").read_text())
        parts = state.get("parts")
        if parts is None:        # written before parts were recorded
            parts = [{"ended": state.get("status"), "step": state.get("step"),
                      "wall_time_s": float(state.get("wall_time_s") or 0.0)}]
        return [{**p, "wall_time_s": float(p.get("wall_time_s") or 0.0)} for p in parts]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def _paper_row(cfg: RunConfig) -> dict | None:
    """The paper's row this run's settings came from, as result.json records it."""
    from bench.paper import paper_rows, paper_setting

    # the paper's further sizes (e.g. scuRNN n=250 on MNIST) are rows of their own: the row of
    # this size and length first, else the (model, task, length) default
    sized = [r for r in paper_rows(cfg.model, cfg.task)
             if r.n_hidden == cfg.n_hidden and r.seq_len in (None, cfg.seq_len)]
    row = min(sized, key=lambda r: r.seq_len is None) if sized else paper_setting(cfg.model, cfg.task, cfg.seq_len)
    if row is None:
        return None
    return {"source": row.source, "n_hidden": row.n_hidden, "seq_len": row.seq_len, "budget": row.budget,
            "reported": dict(row.reported), "used_its_hidden_size": cfg.n_hidden == row.n_hidden}

"""The run function: one validated config -> one trained model and one result.json.

``bench run``, every sweep trial and the tests call :func:`run` (DESIGN.md principle 1).
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench.config import RunConfig, resolve
from bench.results import atomic_write_text, write_result
from bench.secrets import mask_text

ACCELERATORS = {"auto": "auto", "cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "mps": "mps"}
# Exit code of `bench run` when SIGTERM/SIGUSR1 stopped it after saving a checkpoint
# (EX_TEMPFAIL: "try again"); continue with `bench run --resume RUN_DIR`.
EXIT_PREEMPTED = 75
EXIT_DIVERGED = 3
PREEMPT_CKPT = "preempt.ckpt"


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
    base = Path(cfg.runs_dir) / cfg.task / cfg.model
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from bench.errors import ConfigError
        raise ConfigError(f"cannot create runs directory {base}: {exc.strerror}; choose another with --runs-dir") from None
    if not os.access(base, os.W_OK):
        from bench.errors import ConfigError
        raise ConfigError(f"runs directory {base} is not writable; choose another with --runs-dir")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = base / (f"{stamp}-{cfg.config_hash()[:8]}-seed{cfg.seed}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {base}")


def read_curves(run_dir: Path):
    """The run's logged metrics, joined across resumed parts (csv/metrics.csv, csv/part1/...).

    A later part starts at its checkpoint's step; rows an earlier part logged from that step on
    (after the checkpoint, before the kill) are dropped, so every step appears once.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    files = [run_dir / "csv" / "metrics.csv"] + sorted(run_dir.glob("csv/part*/metrics.csv"),
                                                       key=lambda f: int(f.parent.name[4:]))
    files = [f for f in files if f.exists() and f.stat().st_size]
    if not files:
        return None, None
    parts = [pd.read_csv(f) for f in files]
    if len(parts) == 1:
        return parts[0], files[0]
    merged = parts[0]
    for part in parts[1:]:
        start = part["step"].min() if len(part) else None
        if start is not None:
            merged = merged[merged["step"] < start]
        merged = pd.concat([merged, part], ignore_index=True)
    out = run_dir / "csv" / "curves.csv"
    atomic_write_text(out, merged.to_csv(index=False))
    return merged, out


def summarise(curves, task, metric_mode: str) -> dict:
    """Final and best metrics from the logged curves (pure function of the CSV)."""
    out: dict = {}
    if curves is None:
        return out
    train = curves.dropna(subset=["train/loss"]) if "train/loss" in curves else None
    if train is not None and len(train):
        out["final_train_loss"] = float(train["train/loss"].iloc[-10:].mean())
        out["train_steps_logged"] = int(train["step"].iloc[-1]) + 1
        if task.baseline is not None:
            # smoothed over 5 logged points (50 steps): one lucky batch is not "below baseline"
            smooth = train["train/loss"].rolling(5, min_periods=5).mean()
            below = train[smooth < task.baseline]
            out["first_step_below_baseline"] = int(below["step"].iloc[0]) + 1 if len(below) else None
    key = f"val/{task.metric}"
    if key in curves:
        val = curves.dropna(subset=[key])
        if len(val):
            best = val[key].idxmax() if metric_mode == "max" else val[key].idxmin()
            out["final_val_" + task.metric] = float(val[key].iloc[-1])
            out["best_val_" + task.metric] = float(val.loc[best, key])
            out["best_val_step"] = int(val.loc[best, "step"]) + 1
    tracked = f"tracked_test/{task.metric}"
    if tracked in curves and len(curves[tracked].dropna()):
        values = curves[tracked].dropna()
        out["best_test_" + task.metric] = float(values.max() if metric_mode == "max" else values.min())
    if "val/loss" in curves:
        val = curves.dropna(subset=["val/loss"])
        if len(val):
            out["final_val_loss"] = float(val["val/loss"].iloc[-1])
            out["best_val_loss"] = float(val["val/loss"].min())
    if "diag/unitarity_error" in curves:
        u = curves["diag/unitarity_error"].dropna()
        if len(u):
            out["max_unitarity_error"] = float(u.max())
    return out


def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")


def load_resume_config(run_dir: str | Path) -> RunConfig:
    """The config of an unfinished run folder, with a clear error if it cannot be resumed."""
    from bench.errors import ConfigError

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"cannot resume {run_dir}: no config.json there (is it a run folder made by `bench run`?)")
    if (run_dir / "result.json").exists():
        raise ConfigError(f"cannot resume {run_dir}: the run already finished (result.json exists)")
    if resume_checkpoint(run_dir) is None:
        raise ConfigError(f"cannot resume {run_dir}: no checkpoints/{PREEMPT_CKPT} or checkpoints/last.ckpt")
    return RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))


def resume_checkpoint(run_dir: Path) -> Path | None:
    for name in (PREEMPT_CKPT, "last.ckpt"):
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            return path
    return None


def _is_submitit_handler(handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


def _preemption_callback(run_dir: Path):
    import signal
    import threading

    from lightning.pytorch.callbacks import Checkpoint

    class PreemptionCheckpoint(Checkpoint):
        """SIGTERM or SIGUSR1: checkpoint where the run can continue exactly, then stop.

        That point is the end of the training step during which the signal arrived, or, when a
        validation follows that step (or is running), the end of that validation. Lightning's
        own reaction to SIGTERM (a ``SIGTERMException`` after the current *validation batch*)
        would cut a validation short: its value would be lost on resume, and so would a best
        checkpoint taken there. So this callback owns both signals during training, and raises
        Lightning's SIGTERM flag itself (``trainer._signal_connector``, pinned lightning 2.6)
        only where stopping is exact:

        * after a training step that no validation follows: Lightning stops at the end of the
          step, and :meth:`on_exception` saves (the state Lightning resumes as "restarted on
          last": the next step is the first one to run);
        * at the end of a validation: :meth:`on_validation_end` saves there, after the
          ``ModelCheckpoint`` has recorded this validation (both are ``Checkpoint`` callbacks,
          which Lightning runs last and in list order, so this one must come after it): the
          state Lightning's own ``last.ckpt`` has, which resumes without repeating the
          validation and with the logging step where it was.

        Two states Lightning does not resume exactly are repaired: a stop at an epoch's end
        (:meth:`_at_next_epoch_start`) and a checkpoint with no training left
        (:meth:`on_load_checkpoint`). The data loader's position travels in the same
        checkpoint (tasks/loader.py).
        """

        def __init__(self):
            self.saved_step = None
            self.requested = False
            self.submitit_handler = None
            self._originals: dict = {}

        def _signals(self):
            own = [getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)]
            if _is_submitit_handler(signal.getsignal(signal.SIGUSR2)):
                own.append(signal.SIGUSR2)         # submitit's time-out/preemption signal
            return [s for s in own if s is not None]

        def on_fit_start(self, trainer, module):
            # Lightning installs its SIGTERM handler after this hook; remember what was there before
            if threading.current_thread() is threading.main_thread():
                self._originals = {s: signal.getsignal(s) for s in self._signals()}

        def on_train_start(self, trainer, module):
            if self._originals:
                for s in self._originals:
                    signal.signal(s, self._on_signal)
            connector = trainer._signal_connector
            if connector.received_sigterm:          # arrived while Lightning restored the checkpoint
                self.requested, connector.received_sigterm = True, False

        def _on_signal(self, signum, frame):
            self.requested = True
            previous = self._originals.get(signum)
            if signum == signal.SIGTERM and callable(previous):
                previous(signum, frame)             # as Lightning does: chain an earlier SIGTERM handler
            elif signum == getattr(signal, "SIGUSR2", None) and callable(previous):
                # submitit requeues the job and exits in its handler: first save where the run can
                # continue exactly, then hand over (run() calls it once preempt.ckpt is written)
                self.submitit_handler = lambda: previous(signum, None)

        def _stop(self, trainer):
            trainer._signal_connector.received_sigterm = True

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.requested:
                self._stop(trainer)   # Lightning stops after this step, or after the validation it runs

        def on_validation_start(self, trainer, module):
            if self.requested and not trainer.sanity_checking:
                trainer._signal_connector.received_sigterm = False     # let the validation finish

        def on_validation_end(self, trainer, module):
            if self.requested and not trainer.sanity_checking and self.saved_step is None:
                self._save(trainer)
                self._stop(trainer)

        def on_fit_end(self, trainer, module):
            self._restore()

        def on_load_checkpoint(self, trainer, module, checkpoint):
            """A checkpoint whose training is complete (taken at the final validation, by this
            callback or as Lightning's last.ckpt) resumes with no step left to run, so Lightning
            never moves its logging step past that validation's, as the step after it would
            have, and the test metrics land a step early (where read_curves takes them for the
            start of the new part). Put the logging step where the finished run had it: one per
            optimizer step (the harness does not accumulate gradients)."""
            state = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict")
            step = int(checkpoint.get("global_step", 0))
            if state is not None and trainer.max_steps != -1 and step >= trainer.max_steps:
                state["_batches_that_stepped"] = max(int(state.get("_batches_that_stepped", 0)), step)

        def on_exception(self, trainer, module, exc):
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            # Lightning raises this at the end of the step (or epoch) in which the flag was raised
            if isinstance(exc, SIGTERMException) and self.saved_step is None:
                self._at_next_epoch_start(trainer)
                self._save(trainer)
            self._restore()

        @staticmethod
        def _at_next_epoch_start(trainer):
            """After an epoch's last step, Lightning stops at the end of the epoch, with the epoch
            counted as done but its batch counters still in place until the next epoch resets them;
            resumed from there, it would continue "inside" the finished epoch (a short epoch and
            the wrong batches). Reset them as the next epoch's start would (pinned lightning 2.6)."""
            fit = trainer.fit_loop
            loop = fit.epoch_loop
            if fit.epoch_progress.current.completed == fit.epoch_progress.current.ready and \
                    loop.batch_progress.current.ready:
                loop.batch_progress.reset_on_run()
                loop.scheduler_progress.reset_on_run()
                loop.automatic_optimization.optim_progress.reset_on_run()
                loop.val_loop.batch_progress.total.reset()

        def _restore(self):
            for s, handler in self._originals.items():
                if handler is not None:
                    signal.signal(s, handler)
            self._originals = {}

        def _save(self, trainer):
            path = run_dir / "checkpoints" / PREEMPT_CKPT
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".tmp-{PREEMPT_CKPT}")
            trainer.save_checkpoint(str(tmp))
            os.replace(tmp, path)          # never a half-written checkpoint under the real name
            self.saved_step = trainer.global_step

    return PreemptionCheckpoint()


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
    if not cfg.resolved:
        cfg = resolve(cfg)
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bench.models import build_model
    from bench.module import DivergedError, SequenceModule
    from bench.tasks import build_task
    from bench.tracking import finish_wandb, make_loggers, wandb_mode

    check_device(cfg.device)
    if cfg.quiet:
        _quiet_lightning()
    if cfg.fallback and (cfg.scale == "paper" or not cfg.quiet):     # a sweep's quick trials stay quiet
        print(f"bench: note: {cfg.fallback}", file=sys.stderr)
    task = build_task(cfg.task, seq_len=cfg.seq_len, data_dir=cfg.data_dir, data_seed=cfg.data_seed)
    datamodule = task.datamodule(cfg.batch_size)  # data errors surface before the run dir exists
    datamodule.track_test = bool(cfg.track_test)
    ckpt_path, earlier = None, []
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        ckpt_path = resume_checkpoint(run_dir)
        earlier = _earlier_parts(run_dir)
    else:
        run_dir = make_run_dir(cfg)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg.model, task.d_input, task.d_output, cfg.n_hidden, **cfg.model_options)
    module = SequenceModule(model, task, cfg.opts)
    run_name = f"{cfg.model}-{cfg.task}-n{cfg.n_hidden}-s{cfg.seed}"
    loggers, mode = make_loggers(cfg, run_dir, run_name)
    if ckpt_path is not None:   # a resumed part logs beside the earlier ones; read_curves joins them
        part = 1 + len(list(run_dir.glob("csv/part*/metrics.csv")))
        loggers[0] = CSVLogger(save_dir=str(run_dir), name="csv", version=f"part{part}")
    preemption = _preemption_callback(run_dir)
    monitor = f"val/{task.metric}"
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), monitor=monitor, mode=task.metric_mode,
                                 save_last=True, save_top_k=1, filename="best")
    from bench.diagnostics import Diagnostics

    # `preemption` must stay after `checkpoint`: both are Checkpoint callbacks, which Lightning runs
    # last and in this order, so a preemption at a validation's end sees its best-model update
    cbs = [checkpoint, preemption, Diagnostics(run_dir)] + list(callbacks or [])
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
    status, error, test_final, test_best = "completed", None, {}, {}
    pruned = None
    started = time.time()
    try:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        except SIGTERMException:
            pass
        if preemption.saved_step is not None:
            status = "preempted"
        elif trainer.interrupted:
            status = "interrupted"
        else:
            test_final = trainer.test(module, datamodule=datamodule, verbose=not cfg.quiet)[0]
            if checkpoint.best_model_path:
                test_best = trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path,
                                         verbose=False)[0]
    except DivergedError as exc:
        status, error = "diverged", str(exc)
    except Exception as exc:
        if type(exc).__name__ != "TrialPruned":     # optuna's, raised by a sweep's pruning callback
            raise
        status, error, pruned = "pruned", str(exc) or "pruned by the sweep's pruner", exc
    finally:
        finish_wandb()
    part_wall = time.time() - started
    wall = sum(p["wall_time_s"] for p in earlier) + part_wall     # every part that stopped cleanly
    step = preemption.saved_step or int(trainer.global_step)
    parts = earlier + [{"ended": status, "step": step, "wall_time_s": round(part_wall, 3)}]
    if status in ("preempted", "interrupted"):
        state = {"status": status, "step": step,
                 "checkpoint": _rel(str(resume_checkpoint(run_dir) or ""), run_dir),
                 "wall_time_s": round(wall, 3), "resume": f"bench run --resume {run_dir}",
                 "parts": parts}
        atomic_write_text(run_dir / "preempted.json", json.dumps(state, indent=2) + "\n")
        if preemption.submitit_handler is not None:
            preemption.submitit_handler()       # requeues the job and raises SystemExit
        return {**state, "run_dir": str(run_dir), "config": cfg.to_dict()}

    curves, curves_path = read_curves(run_dir)
    summary = summarise(curves, task, task.metric_mode)
    metrics = {**summary, **{k.replace("/", "_"): float(v) for k, v in test_final.items()},
               **{"best_ckpt_" + k.replace("/", "_"): float(v) for k, v in test_best.items()}}
    result = {
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
        "global_step": int(trainer.global_step),
        "wall_time_s": round(wall, 3),
        "seconds_per_step": round(wall / max(1, trainer.global_step), 5),
        "parts": parts,
        "curves": str(curves_path.relative_to(run_dir)) if curves_path else None,
        "checkpoints": {"best": _rel(checkpoint.best_model_path, run_dir),
                        "last": _rel(str(run_dir / "checkpoints" / "last.ckpt"), run_dir)},
        "wandb": {"mode": mode, "requested": wandb_mode(cfg.wandb),
                  "dir": str(run_dir / "wandb") if mode != "disabled" else None},
        "code_version": code_version(),
        "library_versions": library_versions(),
        "hardware": hardware(),
        "command": mask_text(" ".join(sys.argv)) if sys.argv else None,
        "run_dir": str(run_dir),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_result(run_dir, result)
    for leftover in (run_dir / "preempted.json", run_dir / "checkpoints" / PREEMPT_CKPT):
        leftover.unlink(missing_ok=True)    # superseded by result.json and last.ckpt
    if pruned is not None:
        raise pruned                        # the sweep marks the trial PRUNED; the record stays
    return result


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
    from bench.paper import paper_setting

    row = paper_setting(cfg.model, cfg.task, cfg.seq_len)
    if row is None:
        return None
    return {"source": row.source, "n_hidden": row.n_hidden, "seq_len": row.seq_len, "budget": row.budget,
            "reported": dict(row.reported), "used_its_hidden_size": cfg.n_hidden == row.n_hidden}

"""One trial: run it through :func:`bench.run.run` and tell the study what happened.

Interruptions (Ctrl-C, SIGTERM, a SLURM time-out) and unfit nodes give the trial back without
counting as its failure; a trial's own exception is retried ``MAX_TRIAL_RETRIES`` times; a
retry continues the run folder an earlier attempt left (its checkpoint), or records the result
that attempt finished before its worker died.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from bench.errors import BenchError
from bench.sweep.errors import TrialTakenOver, WorkerUnfit
from bench.sweep.space import sample_point
from bench.sweep.storage import Heartbeat, owner_dead
from bench.sweep.study import Sweep, as_json


# A trial's own failure (an exception inside training; divergence is a result, not a failure)
# is re-queued this many times before its point stays FAILED; `bench sweep retry` re-queues it.
MAX_TRIAL_RETRIES = 2


def _trial_callback_class():
    import lightning.pytorch as pl
    import optuna

    class TrialCallback(pl.Callback):
        """Links the trial to its run folder and reports ``val/<metric>`` for pruning.

        optuna_integration's PyTorchLightningPruningCallback reports at ``current_epoch``; our runs
        validate every ``val_every`` steps inside one long epoch, so all its reports after the
        first are dropped as duplicates of step 0. This reports at ``global_step`` instead.
        """

        def __init__(self, trial, monitor: str):
            self.trial, self.monitor, self.run_dir = trial, monitor, None

        def on_fit_start(self, trainer, pl_module):
            self.run_dir = str(Path(trainer.default_root_dir).resolve())
            with _taken_over_check():
                self.trial.set_user_attr("run_dir", self.run_dir)

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            score = trainer.callback_metrics.get(self.monitor)
            if score is None:
                return
            step = int(trainer.global_step)
            with _taken_over_check():
                self.trial.report(float(score), step=step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} ({self.monitor} = {float(score):.4g})")

    return TrialCallback


@contextlib.contextmanager
def _taken_over_check():
    import optuna

    try:
        yield
    except optuna.exceptions.UpdateFinishedTrialError:
        raise TrialTakenOver from None


def _config_record(cfg) -> dict:
    return as_json(cfg.to_dict())


def _left_folders(ua: dict) -> list[Path]:
    """Run folders an earlier attempt of this point left that this trial may use: one its worker
    left on purpose (Ctrl-C, SIGTERM preemption), or one whose worker is known dead. Never the
    folder of a worker that may still be alive (a too-short heartbeat): two runs would write
    into one folder."""
    dead = owner_dead(ua.get("owner"))
    return [Path(f) for f in (ua.get("resume_dir"), ua.get("run_dir") if dead else None) if f]


def _discard_empty(ua: dict, label: str) -> None:
    """Remove the left folders with neither a result nor a checkpoint (their worker died before
    its first checkpoint): they hold nothing worth keeping and nothing refers to them, so the
    point keeps one run folder."""
    from bench.preemption import resume_checkpoint

    for folder in _left_folders(ua):
        if folder.is_dir() and not (folder / "result.json").exists() and not resume_checkpoint(folder):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"[{label}] removed {folder}: its worker died before its first checkpoint", flush=True)


def _resume_from(ua: dict) -> str | None:
    """A left folder whose run has a checkpoint to continue from and no result yet."""
    from bench.preemption import resume_checkpoint

    for folder in _left_folders(ua):
        if folder.is_dir() and not (folder / "result.json").exists() and resume_checkpoint(folder):
            return str(folder)
    return None


def _left_result(ua: dict) -> dict | None:
    """The result of a run that finished but whose worker died before telling the study (kill -9
    while reporting): the trial takes that result instead of training the point a second time."""
    for folder in _left_folders(ua):
        with contextlib.suppress(OSError, ValueError):
            result = json.loads((folder / "result.json").read_text())
            final = isinstance(result, dict) and result.get("status") not in ("preempted", "interrupted")
            if final and isinstance(result.get("metrics"), dict):
                return {**result, "run_dir": str(folder)}
    return None


def _requeue(study, trial, outcome: str, desc: str, started: float, retried_from, run_dir,
             error: str | None = None, attempt: int = 0) -> None:
    """FAIL this trial and queue the same parameters again (the sweep resumes with them).
    ``attempt`` counts the point's own failures (interruptions and unfit nodes do not count)."""
    from optuna.trial import TrialState

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)     # let the bookkeeping finish
    try:
        _finish(study, trial, TrialState.FAIL, outcome, error or f"{outcome}; re-queued", desc, started)
        attrs = {"retried_from": retried_from if retried_from is not None else trial.number}
        if attempt:
            attrs["attempt"] = attempt
        if run_dir:
            attrs["resume_dir"] = str(Path(run_dir).resolve())    # a worker elsewhere may start in another folder
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    finally:
        signal.signal(signal.SIGINT, old)


def run_trial(sweep: Sweep, study, trial, inherited: dict) -> str:
    """Run one trial through bench.run.run and tell the study; returns the outcome.
    ``inherited``: the trial's user attributes while it waited (a retry's come from the failed
    trial, including its worker and run folder)."""
    import optuna
    from optuna.trial import TrialState

    from bench.reproduce_execute import eval_limit_callbacks
    from bench.run import run
    from bench.tasks import get_task_class

    ua = inherited
    retried_from = ua.get("retried_from", ua.get("number"))   # a retry inherits the failed trial's attrs
    _discard_empty(ua, sweep.label)
    resume, left = _resume_from(ua), _left_result(ua)
    trial.set_user_attr("number", trial.number)
    if retried_from is not None:
        trial.set_user_attr("retried_from", retried_from)
    for stale in ("run_dir", "result", "outcome", "error", "resume_dir"):
        if stale in ua:
            trial.set_user_attr(stale, None)
    started = time.time()
    point = sample_point(trial, sweep.space, sweep.sampler)
    desc = sweep.describe(point)
    try:
        cfg = sweep.trial_config(point)
    except BenchError as exc:
        return _finish(study, trial, TrialState.FAIL, "invalid", str(exc), desc, started)
    # the config's own tags stay (a reproduce run's eval_batches is part of what it is)
    cfg = cfg.with_(tags={**cfg.tags, "study": sweep.name, "trial": trial.number, "choices": as_json(point),
                          **({"retried_from": retried_from} if retried_from is not None else {})})
    trial.set_user_attr("config", _config_record(cfg))
    trial_id = sweep.storage.get_trial_id_from_study_id_trial_number(
        sweep.storage.get_study_id_from_name(sweep.name), trial.number)
    metric = get_task_class(cfg.task).metric
    callback = _trial_callback_class()(trial, f"val/{metric}")
    callbacks = [callback] + eval_limit_callbacks(cfg)
    if left is not None:
        print(f"[{sweep.label}] trial {trial.number}: the run in {left['run_dir']} finished before its worker "
              f"died; this trial records its result instead of training again", flush=True)
        trial.set_user_attr("run_dir", left["run_dir"])
        result = left
    else:
        try:
            with Heartbeat(sweep.storage, trial_id, sweep.heartbeat if sweep.storage_spec.kind == "rdb" else None):
                try:
                    result = run(cfg, callbacks=callbacks, **({"resume_dir": resume} if resume else {}))
                except Exception as exc:
                    if not resume or isinstance(exc, (optuna.TrialPruned, BenchError)):
                        raise
                    # e.g. a checkpoint cut short by SIGKILL: train this trial afresh instead
                    print(f"[{sweep.label}] trial {trial.number}: cannot resume in {resume} ({exc}); starting afresh",
                          flush=True)
                    result = run(cfg, callbacks=callbacks)
        except optuna.TrialPruned as exc:
            return _finish(study, trial, TrialState.PRUNED, "pruned", str(exc), desc, started)
        except TrialTakenOver:
            return _drop_taken_over(sweep, trial, desc, started, callback.run_dir)
        except (KeyboardInterrupt, SystemExit) as exc:
            # The run folder keeps its last (or preemption) checkpoint; the retry continues there.
            _requeue(study, trial, "interrupted", desc, started, retried_from, callback.run_dir,
                     attempt=ua.get("attempt", 0))
            if isinstance(exc, SystemExit) and exc.code not in (None, 0, 1):
                # submitit's time-out/preemption handler: it has requeued the job and exits with its
                # own code, which must reach submitit unchanged (Lightning turns Ctrl-C into exit 1)
                raise
            raise KeyboardInterrupt from None
        except BenchError as exc:
            # run() raises input errors only before training: this node's runs dir or data. The point
            # is fine: give it back untouched and stop this worker.
            _requeue(study, trial, "worker-unfit", desc, started, retried_from, None,
                     error=f"{exc}; re-queued for another worker", attempt=ua.get("attempt", 0))
            raise WorkerUnfit(f"this worker cannot run trials: {exc}; trial {trial.number} went back to the queue") \
                from None
        except Exception as exc:
            attempt = ua.get("attempt", 0) + 1
            error = f"{type(exc).__name__}: {exc}"
            if attempt <= MAX_TRIAL_RETRIES:
                _requeue(study, trial, "error", desc, started, retried_from, None,
                         error=f"{error} (attempt {attempt} of {MAX_TRIAL_RETRIES + 1}; re-queued)", attempt=attempt)
                return "error"
            return _finish(study, trial, TrialState.FAIL, "error",
                           f"{error} (attempt {attempt} of {MAX_TRIAL_RETRIES + 1}; `bench sweep retry` re-queues it)",
                           desc, started)
    if result["status"] in ("preempted", "interrupted"):
        # SIGTERM (cluster preemption) or Ctrl-C: run() checkpointed; the retry continues from there
        _requeue(study, trial, result["status"], desc, started, retried_from, result.get("run_dir"))
        raise KeyboardInterrupt
    trial.set_user_attr("result", str(Path(result["run_dir"]).resolve() / "result.json"))
    if result["status"] != "completed":
        return _finish(study, trial, TrialState.FAIL, result["status"], result.get("error"), desc, started)
    value = result["metrics"].get(f"best_val_{metric}")
    if value is None or not math.isfinite(value):
        return _finish(study, trial, TrialState.FAIL, "no-metric", f"no finite best_val_{metric}", desc,
                       started)
    return _finish(study, trial, TrialState.COMPLETE, "complete", None, desc, started, value)


def _drop_taken_over(sweep: Sweep, trial, desc: str, started: float, run_dir: str | None) -> str:
    """A woken stalled worker: its trial was failed by the heartbeat and re-run elsewhere. Drop it
    and the half-trained folder it was writing (nothing else refers to it)."""
    if run_dir and Path(run_dir).is_dir() and not (Path(run_dir) / "result.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[{sweep.label}] trial {trial.number} {desc} -> dropped: the study re-ran it while this worker was "
          f"stalled ({time.time() - started:.1f} s)", flush=True)
    return "taken-over"


def _finish(study, trial, state, outcome: str, error, desc: str, started: float, value=None) -> str:
    import optuna

    try:
        trial.set_user_attr("outcome", outcome)
        if error:
            trial.set_user_attr("error", str(error)[:2000])
        study.tell(trial, value if state.name == "COMPLETE" else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # its heartbeat went stale while it ran (an overloaded node?): it was FAILED and re-queued
        outcome = f"{outcome}, not recorded: the trial was already failed by its heartbeat"
    shown = f" {value:.4g}" if value is not None else ""
    why = f": {str(error).splitlines()[0][:160]}" if error and outcome not in ("complete",) else ""
    print(f"[{socket.gethostname()}:{os.getpid()}] trial {trial.number} {desc} -> {outcome}{shown} "
          f"({time.time() - started:.1f} s){why}", flush=True)
    return outcome

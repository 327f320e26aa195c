"""A sweep worker: claim a trial, run it through :func:`bench.run.run`, record what happened;
re-queue the trials of dead, interrupted or unfit workers; leave when nothing is left.

What is hand-written here and why (everything else is Optuna's):
- The claim: Optuna's ``Study.ask`` pops a waiting trial, but falls through to the sampler when
  none is left (for the grid, a point outside it) and records nothing about the worker; the claim
  below takes WAITING trials only, and a RUNNING trial always has a heartbeat or an owner.
- Journal storage has no heartbeat in Optuna 5: a trial whose worker process (same host) is gone
  is FAILED and re-queued by ``reap_dead_local``. On a database, Optuna's own heartbeat and
  ``RetryHeartbeatStaleTrialCallback`` do it.
- Interruptions (Ctrl-C, SIGTERM, SLURM time-out) and unfit nodes give the trial back without
  counting as its failure; a trial's own exception is retried ``MAX_TRIAL_RETRIES`` times.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from bench.errors import BenchError
from bench.sweep.errors import TrialTakenOver, WorkerUnfit
from bench.sweep.space import apply_overrides, sample_point
from bench.sweep.storage import Heartbeat, owner, owner_dead
from bench.sweep.report import best_trial, confirm_records
from bench.sweep.study import Sweep, as_json, quiet_optuna


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


def _resume_from(ua: dict, label: str) -> str | None:
    """A left folder whose run has a checkpoint to continue from and no result yet. One with
    neither (its worker died before the first checkpoint) holds nothing worth keeping and
    nothing refers to it: it is removed, so the point keeps one run folder."""
    from bench.run import resume_checkpoint

    for folder in _left_folders(ua):
        if (folder / "result.json").exists() or not folder.is_dir():
            continue
        if resume_checkpoint(folder):
            return str(folder)
        shutil.rmtree(folder, ignore_errors=True)
        print(f"[{label}] removed {folder}: its worker died before its first checkpoint", flush=True)
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
            attrs["resume_dir"] = run_dir
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    finally:
        signal.signal(signal.SIGINT, old)


def run_trial(sweep: Sweep, study, trial, inherited: dict) -> str:
    """Run one trial through bench.run.run and tell the study; returns the outcome.
    ``inherited``: the trial's user attributes while it waited (a retry's come from the failed
    trial, including its worker and run folder)."""
    import optuna
    from optuna.trial import TrialState

    from bench.config import resolve
    from bench.run import run

    ua = inherited
    retried_from = ua.get("retried_from", ua.get("number"))   # a retry inherits the failed trial's attrs
    resume, left = _resume_from(ua, sweep.label), _left_result(ua)
    trial.set_user_attr("number", trial.number)
    if retried_from is not None:
        trial.set_user_attr("retried_from", retried_from)
    for stale in ("run_dir", "result", "outcome", "error", "resume_dir"):
        if stale in ua:
            trial.set_user_attr(stale, None)
    started = time.time()
    point = sample_point(trial, sweep.space, sweep.sampler)
    desc = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
    try:
        cfg = resolve(apply_overrides(sweep.base, point, sweep.space))
    except BenchError as exc:
        return _finish(study, trial, TrialState.FAIL, "invalid", str(exc), desc, started)
    cfg.tags = {"study": sweep.name, "trial": trial.number, "choices": as_json(point),
                **({"retried_from": retried_from} if retried_from is not None else {})}
    trial.set_user_attr("config", _config_record(cfg))
    trial_id = sweep.storage.get_trial_id_from_study_id_trial_number(
        sweep.storage.get_study_id_from_name(sweep.name), trial.number)
    callback = _trial_callback_class()(trial, f"val/{sweep.metric}")
    if left is not None:
        print(f"[{sweep.label}] trial {trial.number}: the run in {left['run_dir']} finished before its worker "
              f"died; this trial records its result instead of training again", flush=True)
        trial.set_user_attr("run_dir", left["run_dir"])
        result = left
    else:
        try:
            with Heartbeat(sweep.storage, trial_id, sweep.heartbeat if sweep.storage_spec.kind == "rdb" else None):
                try:
                    result = run(cfg, callbacks=[callback], **({"resume_dir": resume} if resume else {}))
                except Exception as exc:
                    if not resume or isinstance(exc, (optuna.TrialPruned, BenchError)):
                        raise
                    # e.g. a checkpoint cut short by SIGKILL: train this trial afresh instead
                    print(f"[{sweep.label}] trial {trial.number}: cannot resume in {resume} ({exc}); starting afresh",
                          flush=True)
                    result = run(cfg, callbacks=[callback])
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
    value = result["metrics"].get(f"best_val_{sweep.metric}")
    if value is None or not math.isfinite(value):
        return _finish(study, trial, TrialState.FAIL, "no-metric", f"no finite best_val_{sweep.metric}", desc,
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


def _budget_left(sweep: Sweep, study) -> int:
    from optuna.trial import TrialState

    if sweep.n_trials is None:
        return 0
    counted = 0
    for t in study.get_trials(deepcopy=False):
        # a FAIL without our outcome is a dead worker's trial; its retry (WAITING) counts instead
        if t.state != TrialState.FAIL or t.user_attrs.get("outcome") not in (None, "interrupted", "preempted"):
            counted += 1
    return sweep.n_trials - counted


def _reap(sweep: Sweep, study, lost, why) -> int:
    """FAIL and re-queue (same parameters) every RUNNING trial for which ``lost(trial)`` holds,
    re-checked under the study lock (another worker may have reaped it first). A trial whose
    worker is known dead keeps its run folder for the retry to continue in."""
    from optuna.trial import TrialState

    def found():
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if lost(t)]

    if not found():
        return 0
    reaped = 0
    with sweep.lock():
        for t in found():
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            params = t.system_attrs.get("fixed_params") or t.params
            attrs = {"retried_from": t.user_attrs.get("retried_from", t.number)}
            if t.user_attrs.get("run_dir") and owner_dead(t.user_attrs.get("owner")):
                attrs["resume_dir"] = t.user_attrs["run_dir"]     # its worker is dead: safe to continue there
            study.enqueue_trial(params, user_attrs=attrs)
            print(f"[{sweep.label}] trial {t.number}: {why(t)}; FAILED and re-queued", flush=True)
            reaped += 1
    return reaped


def reap_dead_local(sweep: Sweep, study) -> int:
    """Journal storage has no heartbeats: FAIL and re-queue RUNNING trials whose process is gone."""
    return _reap(sweep, study, lambda t: owner_dead(t.user_attrs.get("owner")),
                 lambda t: f"its worker {t.user_attrs['owner']['pid']} is gone")


def _may_come_back(sweep: Sweep, study) -> bool:
    """Should this worker stay for a RUNNING trial elsewhere? With ``--wait``, while any runs
    (it may still fail and be re-queued). Otherwise only for one that is coming back: its owner
    is known dead (same host, process gone) or was never recorded, so the reaper will re-queue
    it; a worker with nothing left to run leaves instead of holding its GPU."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    host = socket.gethostname()
    if sweep.wait:
        if sweep.storage_spec.kind == "rdb":
            return bool(running)     # heartbeats will tell
        return any((t.user_attrs.get("owner") or {}).get("host", host) == host for t in running)
    return any(owner_dead(t.user_attrs.get("owner")) or not t.user_attrs.get("owner") for t in running)


def preflight(sweep: Sweep) -> None:
    """Check, before taking any trial, what would fail every trial on this node: the runs dir
    can be written and the task's data is there and valid (raises WorkerUnfit, takes nothing);
    and whether W&B can be used online (if not, one warning and its trials log offline)."""
    import tempfile

    from bench.config import resolve
    from bench.tasks import build_task
    from bench.tracking import check_online, wandb_mode

    cfg = resolve(copy.deepcopy(sweep.base))
    base = Path(cfg.runs_dir) / cfg.task / cfg.model
    try:
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=base, prefix=".probe-"):
            pass
    except OSError as exc:
        raise WorkerUnfit(f"this worker cannot write its runs directory {base}: {exc.strerror or exc}; "
                          f"no trial was taken (choose another --runs-dir)") from None
    try:
        build_task(cfg.task, seq_len=cfg.seq_len, data_dir=cfg.data_dir, data_seed=cfg.data_seed) \
            .datamodule(cfg.batch_size)
    except BenchError as exc:
        raise WorkerUnfit(f"this worker cannot load the task's data: {exc}; no trial was taken") from None
    if wandb_mode(cfg.wandb) == "online":
        problem = check_online()
        if problem:
            print(f"[{sweep.label}] warning: W&B cannot be used online ({problem}); this worker's trials log "
                  f"offline (result.json says so; sync later with `wandb sync`)", file=sys.stderr, flush=True)


def claim(sweep: Sweep, study):
    """Take one WAITING trial: (the trial, its user attributes while it waited), or None. At no moment is the trial RUNNING with nothing to show
    whether its worker lives, so a worker killed at any point of the claim leaves a trial that is
    re-queued: on a database its heartbeat is recorded before its state changes (Optuna fails a
    RUNNING trial whose heartbeat goes stale); on a journal, which has no heartbeats, its owner
    is recorded first, under the study lock. Only public storage calls: Optuna's own pop is
    private, and ``Study.ask`` falls through to the sampler when nothing waits."""
    import optuna
    from optuna.trial import TrialState

    storage = sweep.storage
    study_id = storage.get_study_id_from_name(sweep.name)
    # listed through the study: Optuna's storage cache then knows these trials (optuna.Trial needs it)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if sweep.storage_spec.kind == "rdb":
                storage.record_heartbeat(trial_id)
                taken = storage.set_trial_state_values(trial_id, TrialState.RUNNING)
                if taken:
                    storage.set_trial_user_attr(trial_id, "owner", owner())
            else:
                with sweep.lock():
                    taken = storage.get_trial(trial_id).state == TrialState.WAITING
                    if taken:
                        storage.set_trial_user_attr(trial_id, "owner", owner())
                        taken = storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue             # another worker took it and finished it meanwhile
        if taken:
            return optuna.Trial(study, trial_id), waiting.user_attrs
    return None


def work(sweep: Sweep) -> int:
    """One worker: run trials until the study has none left for it. Returns the number run."""
    import optuna

    study = sweep.load()
    preflight(sweep)
    poll = min(5.0, float(sweep.heartbeat)) if sweep.storage_spec.kind == "rdb" else 2.0
    ran = 0
    while True:
        if sweep.storage_spec.kind == "rdb":
            optuna.storages.fail_stale_trials(study)
        else:
            reap_dead_local(sweep, study)
        claimed = claim(sweep, study)
        if claimed is None and sweep.sampler == "tpe":
            # a new TPE trial enters the queue first, so it is claimed like any other; the
            # budget is checked under the lock so that workers together stop at --n-trials
            with sweep.lock():
                if _budget_left(sweep, study) > 0:
                    study.enqueue_trial({})
                    continue
        if claimed is None:
            if _may_come_back(sweep, study):
                time.sleep(poll)
                continue
            return ran
        run_trial(sweep, study, *claimed)
        ran += 1


def _set_threads(workers: int) -> None:
    # Several workers on few cores: oversubscribed torch threads made a tiny run 10x slower here.
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    elif workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker_main(sweep: Sweep, workers: int, index: int) -> None:
    """Entry point of a spawned local worker process: the validated sweep, its own storage."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)    # kill -TERM = Ctrl-C: re-queue the trial
    os.environ["BENCH_WORKER_INDEX"] = str(index)
    try:
        quiet_optuna()
        _set_threads(workers)
        work(sweep.connect())
    except KeyboardInterrupt:
        sys.exit(130)
    except BenchError as exc:          # WorkerUnfit and friends: one line, as the first worker prints it
        print(f"bench sweep: worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_workers(sweep: Sweep, workers: int) -> int:
    """This process is worker 0; ``workers`` > 1 spawns the others (fresh interpreters, each with
    its own database connection). Returns how many of them exited with an error."""
    _set_threads(workers)
    if workers == 1:
        work(sweep)
        return 0
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    unopened = dataclasses.replace(sweep, storage=None)      # each process opens its own
    procs = [ctx.Process(target=_worker_main, args=(unopened, workers, i), name=f"bench-sweep-{i}")
             for i in range(1, workers)]
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for p in procs:
            p.start()
        print(f"bench sweep: {workers} workers: this process ({os.getpid()}) and "
              f"{', '.join(str(p.pid) for p in procs)}", flush=True)
        work(sweep)
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=60)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    failed = [p for p in procs if p.exitcode]
    for p in failed:
        print(f"bench sweep: worker pid {p.pid} exited with code {p.exitcode}", file=sys.stderr, flush=True)
    if failed:
        work(sweep)   # a worker died after this one finished: reap its trial and finish what is left
    return len(failed)


def confirm_seeds(sweep: Sweep, study, k: int) -> list[dict]:
    """Re-run the best trial's config on k more seeds through run(); record them in the study."""
    from optuna.trial import TrialState

    from bench.config import RunConfig
    from bench.run import run

    if not k:
        return []
    unfinished = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if unfinished:
        print(f"bench sweep: --confirm-seeds skipped: {len(unfinished)} trials are still running or waiting; "
              f"re-run the same command when they are done", flush=True)
        return []
    best = best_trial(study)
    if best is None:
        print("bench sweep: --confirm-seeds skipped: no completed trial", flush=True)
        return []
    base = best.user_attrs["config"]
    for seed in range(base["seed"] + 1, base["seed"] + 1 + k):
        key = f"confirm:{best.number}:{seed}"
        with sweep.lock():
            rec = study.user_attrs.get(key)
            if rec and (rec.get("state") != "running" or not owner_dead(rec.get("owner"))):
                continue
            study.set_user_attr(key, {"state": "running", "seed": seed, "owner": owner()})
        data = {**base, "seed": seed, "resolved": False, "quiet": True,
                "tags": {"study": sweep.name, "confirm_of": best.number}}
        result = run(RunConfig.from_dict(data))
        value = result["metrics"].get(f"best_val_{sweep.metric}")
        study.set_user_attr(key, {"state": result["status"], "seed": seed, "value": value,
                                  "result": str(Path(result["run_dir"]).resolve() / "result.json")})
        print(f"[{sweep.label}] confirm seed {seed} of trial {best.number} -> {result['status']} "
              f"{'' if value is None else f'{value:.4g}'}", flush=True)
    return confirm_records(study, best.number)

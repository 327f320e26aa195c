"""A sweep worker: claim a trial, run it (bench.sweep.trial), re-queue the trials of dead
workers, leave when nothing is left; several local worker processes; confirm seeds.

What is hand-written here and why (everything else is Optuna's):
- The claim: Optuna's ``Study.ask`` pops a waiting trial, but falls through to the sampler when
  none is left (for the grid, a point outside it) and records nothing about the worker; the claim
  below takes WAITING trials only, and a RUNNING trial always has a heartbeat or an owner.
- Journal storage has no heartbeat in Optuna 5: a trial whose worker process (same host) is gone
  is FAILED and re-queued by ``reap_dead_local``. On a database, Optuna's own heartbeat and
  ``RetryHeartbeatStaleTrialCallback`` do it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from pathlib import Path

from bench.errors import BenchError
from bench.sweep.errors import WorkerUnfit
from bench.sweep.report import best_trial, confirm_records
from bench.sweep.storage import owner, owner_dead
from bench.sweep.study import Sweep, quiet_optuna
from bench.sweep.trial import run_trial


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

    from bench.tasks import build_task
    from bench.tracking import check_online, wandb_mode

    configs = sweep.node_configs()
    for cfg in configs:
        base = Path(cfg.runs_dir) / cfg.task / cfg.model
        try:
            base.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=base, prefix=".probe-"):
                pass
        except OSError as exc:
            raise WorkerUnfit(f"this worker cannot write its runs directory {base}: {exc.strerror or exc}; "
                              f"no trial was taken (choose another --runs-dir)") from None
    for cfg in {(c.task, c.seq_len, c.data_dir, c.data_seed): c for c in configs}.values():
        try:
            build_task(cfg.task, seq_len=cfg.seq_len, data_dir=cfg.data_dir, data_seed=cfg.data_seed) \
                .datamodule(cfg.batch_size)
        except BenchError as exc:
            raise WorkerUnfit(f"this worker cannot load the task's data: {exc}; no trial was taken") from None
    if any(wandb_mode(c.wandb) == "online" for c in configs):
        problem = check_online()
        if problem:
            print(f"[{sweep.label}] warning: W&B cannot be used online ({problem}); this worker's trials log "
                  f"offline (result.json says so; sync later with `wandb sync`)", file=sys.stderr, flush=True)


def claim(sweep: Sweep, study):
    """Take one WAITING trial: (the trial, its user attributes while it waited), or None.

    At no moment is the trial RUNNING with nothing to show whether its worker lives, so a worker
    killed at any point of the claim leaves a trial that is re-queued: on a database its
    heartbeat is recorded before its state changes (Optuna fails a RUNNING trial whose heartbeat
    goes stale); on a journal, which has no heartbeats, its owner is recorded first, under the
    study lock. Only public storage calls: Optuna's own pop is
    private, and ``Study.ask`` falls through to the sampler when nothing waits."""
    import optuna
    from optuna.trial import TrialState

    storage = sweep.storage
    study_id = sweep.study_id()
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

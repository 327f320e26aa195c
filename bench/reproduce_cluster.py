"""``bench reproduce ... --storage URL``: an artefact's runs as a study in the sweep storage, so that
workers on any node take them with the sweeps' fault tolerance (bench.sweep): a dead or stalled
worker's run is re-queued and continues from its checkpoint, an interrupted one goes back to the
queue, a run's own failure is retried, and no run is taken twice.

Every node runs the same command: it plans the artefact, joins (or creates) the study, checks that
the study holds the same runs (config hash, seed, evaluation, in the same order: a trial's point is
an index into that list), enqueues the runs that have neither a result nor a trial yet, and works
until nothing is left for it; ``--launcher slurm`` submits the workers as a job array instead.
Each node then prints the table from the result files it can see.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter

from bench.reproduce_cost import estimate_seconds
from bench.reproduce_plan import PlannedRun


def default_study(artefact: str, scale: str) -> str:
    return f"reproduce-{artefact}-{scale}"


def build_sweep(artefact: str, scale: str, runs: list[PlannedRun], args):
    """The validated :class:`bench.sweep.Sweep` whose trials are ``runs`` (states already marked)."""
    from bench.sweep import Sweep, parse_storage
    from bench.sweep.study import as_json, quiet_optuna
    from bench.tasks import get_task_class

    quiet_optuna()
    first = runs[0].resolved
    task_cls = get_task_class(first.task)
    name = args.study or default_study(artefact, scale)
    space = {"name": f"reproduce {artefact} --scale {scale}", "groups": {}, "run": {"run": list(range(len(runs)))}}
    plan = [{"label": r.label(), "config": as_json(r.resolved.to_dict()), "estimate_s": estimate_seconds(r),
             "done": r.state == "done", "resume_dir": r.resume_dir if r.state == "resume" else None} for r in runs]
    sweep = Sweep(name=name, storage_spec=parse_storage(args.storage, args.runs_dir, name), space=space,
                  sampler="grid", base=first, metric=task_cls.metric,
                  direction="maximize" if task_cls.metric_mode == "max" else "minimize", prune=False,
                  n_trials=None, heartbeat=args.heartbeat, wait=args.wait, plan=plan)
    sweep.meta = {"reproduce": f"{artefact}/{scale}",
                  "model": ", ".join(dict.fromkeys(r.model for r in runs)),
                  "task": ", ".join(dict.fromkeys(r.resolved.task for r in runs)),
                  "space": space["name"], "space_def": space, "sampler": "grid", "fixed_groups": None,
                  # what each index means: the same on every node, or the study is another one
                  "base": [[r.config_hash, r.seed, r.eval_batches] for r in runs],
                  "metric": sweep.metric, "direction": sweep.direction, "grid_size": len(runs), "n_trials": None,
                  "runs_dir": args.runs_dir}
    return sweep.connect()


def run_study(artefact: str, scale: str, runs: list[PlannedRun], args, say) -> tuple[int, int]:
    """Create or join the study, then run ``--workers`` local workers on it or submit them with
    ``--launcher``. Returns how many planned runs failed for good (every trial failed) and how
    many are still waiting or running elsewhere."""
    from bench.sweep import prepare, run_workers
    from bench.sweep.launch import check_launcher, launch_array

    check_launcher(args)
    sweep = build_sweep(artefact, scale, runs, args)
    study = prepare(sweep)
    say(f"{artefact} at scale {scale}: study {sweep.name} in {sweep.storage_spec.display}: {len(runs)} runs, "
        f"{sum(r.state == 'done' for r in runs)} already done here; {_counts(study)}")
    with _stdout_to_stderr():
        if args.launcher != "local":
            launch_array(sweep, args)
        else:
            try:
                failed_workers = run_workers(sweep, args.workers)
            except KeyboardInterrupt:
                say("interrupted: the runs in progress went back to the study with their checkpoints; the same "
                    "command continues them")
                raise
            if failed_workers:
                say(f"{failed_workers} worker process(es) exited with an error (see above)")
    failed, elsewhere = _unfinished(sweep, runs)
    if args.launcher != "local" and not args.wait:
        say("the same command without --launcher prints the table when the workers are done")
    else:
        status = f"`bench sweep status --study {sweep.name}{args.storage_ref}`"
        say(f"study {sweep.name}: {_counts(sweep.load())}"
            + (f"; {elsewhere} run(s) still waiting or running on other workers: the same command prints the "
               f"whole table when they are done" if elsewhere else "")
            + (f"; {failed} run(s) failed: {status} shows why, `bench sweep retry --study {sweep.name}"
               f"{args.storage_ref}` queues them again" if failed else ""))
    sweep.close()
    return failed, elsewhere


@contextlib.contextmanager
def _stdout_to_stderr():
    """The workers' progress lines go to stderr (the workers print them to stdout, as `bench sweep`
    does), so that stdout holds the table alone. At the descriptor: spawned workers inherit it."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _counts(study) -> str:
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    return "trials " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) if states else "none yet")


def _unfinished(sweep, runs: list[PlannedRun]) -> tuple[int, int]:
    """Planned runs with neither a result found here nor a completed trial: (those whose every
    trial failed, those with a trial waiting or running)."""
    from optuna.trial import TrialState

    states: dict[int, set] = {}
    for t in sweep.load().get_trials(deepcopy=False):
        states.setdefault(t.params.get("run"), set()).add(t.state)
    failed = elsewhere = 0
    for i, r in enumerate(runs):
        seen = states.get(i, set())
        if r.state == "done" or TrialState.COMPLETE in seen:
            continue
        if seen & {TrialState.WAITING, TrialState.RUNNING}:
            elsewhere += 1
        elif seen:
            failed += 1
    return failed, elsewhere

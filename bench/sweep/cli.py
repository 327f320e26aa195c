"""The ``bench sweep`` command: its flags, and the one place where they become a validated
:class:`~bench.sweep.study.Sweep`."""
from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path

from bench.secrets import mask_text, storage_url
from bench.sweep.errors import SweepError
from bench.sweep.launch import check_launcher, launch_array
from bench.sweep.report import best_trial, cmd_best, cmd_status, open_existing
from bench.sweep.space import (SAMPLERS, apply_overrides, builtin_spaces, check_run_axes, fixed_groups, fixed_text,
                               grid_axes, grid_points, grid_size, load_space, point_key, space_for_model)
from bench.sweep.storage import parse_storage
from bench.sweep.study import Sweep, prepare, quiet_optuna
from bench.sweep.worker import confirm_seeds, run_workers


ACTIONS = ("run", "status", "best", "retry")


def build_sweep(args, *, check: bool = True, open_store: bool = True) -> Sweep:
    """Validate everything the CLI gave before any work starts."""
    from bench.flags import config_from_args
    from bench.config import resolve
    from bench.tasks import get_task_class

    quiet_optuna()
    if not args.model or not args.task:
        raise SweepError("bench sweep needs --model and --task (or the action 'status' / 'best' with --study)")
    if args.sampler not in SAMPLERS:
        raise SweepError(f"unknown sampler {args.sampler!r}; known samplers: {', '.join(SAMPLERS)}")
    space = space_for_model(load_space(args.space), args.model)
    grid_axes(space, args.sampler)      # rejects ranges for the grid
    if args.sampler == "grid" and args.n_trials is not None:
        raise SweepError(f"--n-trials is for --sampler tpe; the grid runs each of its {grid_size(space)} "
                         f"combinations once")
    base = config_from_args(args).with_(quiet=True)     # trials print one line each, not progress bars
    task_cls = get_task_class(base.task)
    name = args.study or f"{base.model}-{base.task}-{space['name']}-{args.sampler}"
    sweep = Sweep(name=name, storage_spec=parse_storage(args.storage, base.runs_dir, name), space=space,
                  sampler=args.sampler, base=base, metric=task_cls.metric,
                  direction="maximize" if task_cls.metric_mode == "max" else "minimize",
                  prune=not args.no_prune, n_trials=args.n_trials if args.sampler == "tpe" else None,
                  heartbeat=args.heartbeat, confirm_seeds=args.confirm_seeds,
                  wait=bool(getattr(args, "wait", False)), sampler_seed=getattr(args, "sampler_seed", None))
    if sweep.sampler == "tpe" and sweep.n_trials is None:
        sweep.n_trials = 50
    fixed = None
    if check:
        fixed = fixed_groups(space, resolve(base))
        check_run_axes(space, base)
    sweep.meta = {"model": base.model, "task": base.task, "space": space["name"], "space_def": space,
                  "fixed_groups": fixed,
                  "sampler": sweep.sampler, "base": base.group_key(), "metric": sweep.metric,
                  "direction": sweep.direction, "grid_size": grid_size(space) if sweep.sampler == "grid" else None,
                  "n_trials": sweep.n_trials, "runs_dir": str(Path(base.runs_dir).resolve())}
    return sweep.connect() if open_store else sweep


def resolve_storage_args(args) -> None:
    """``args.storage`` from --storage, --storage-file or $BENCH_STORAGE; ``args.storage_ref`` is
    how printed commands name it: never with its password."""
    flag = args.storage
    args.storage = storage_url(flag, getattr(args, "storage_file", None))
    if getattr(args, "storage_file", None):
        args.storage_ref = f" --storage-file {shlex.quote(args.storage_file)}"
    elif flag:
        args.storage_ref = f" --storage {shlex.quote(mask_text(flag))}"
    elif args.storage:
        args.storage_ref = ""              # $BENCH_STORAGE names it, in this shell and the next
    else:
        args.storage_ref = f" --runs-dir {shlex.quote(args.runs_dir)}" if args.runs_dir != "runs" else ""


def cmd_retry(args) -> int:
    """Re-queue every point whose trials all FAILED (none complete, waiting, running or pruned)."""
    from optuna.trial import TrialState

    study, spec = open_existing(args)
    by_point: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        by_point.setdefault(point_key(t.system_attrs.get("fixed_params") or t.params), []).append(t)
    failed = [ts for ts in by_point.values() if all(t.state == TrialState.FAIL for t in ts)]
    for ts in failed:
        last = max(ts, key=lambda t: t.number)
        study.enqueue_trial(last.system_attrs.get("fixed_params") or last.params,
                            user_attrs={"retried_from": last.number})
    print(f"bench sweep retry: study {study.study_name} ({spec.display}): re-queued {len(failed)} failed point(s); "
          f"run the sweep's workers again to run them")
    return 0


def dry_run(sweep: Sweep) -> int:
    """Print what the sweep would do; open no storage, create nothing."""
    from bench.config import resolve

    size = grid_size(sweep.space) if sweep.sampler == "grid" else sweep.n_trials
    print(f"bench sweep --dry-run: study {sweep.name} in {sweep.storage_spec.display}; {sweep.base.model} on "
          f"{sweep.base.task}, space {sweep.space['name']}, {sweep.sampler}: {size} trial(s)")
    fixed = sweep.meta.get("fixed_groups") or {}
    if fixed:
        print(f"  fixed in every trial: {fixed_text(fixed)}")
    if sweep.sampler == "grid":
        from bench.optim import format_spec

        for i, point in enumerate(itertools.islice(grid_points(sweep.space), 5)):
            cfg = resolve(apply_overrides(sweep.base, point, sweep.space))
            print(f"  trial {i}: " + ", ".join(f"{g}={format_spec(v)}" for g, v in cfg.opts.items())
                  + f"; n={cfg.n_hidden}, steps={cfg.max_steps}, seed={cfg.seed}")
        if size > 5:
            print(f"  ... and {size - 5} more")
    return 0


def cmd_sweep(args) -> int:
    resolve_storage_args(args)
    if args.action == "status":
        return cmd_status(args)
    if args.action == "best":
        return cmd_best(args)
    if args.action == "retry":
        return cmd_retry(args)
    check_launcher(args)                # before the study is touched
    sweep = build_sweep(args, open_store=not getattr(args, "dry_run", False))
    if getattr(args, "dry_run", False):
        return dry_run(sweep)
    prepare(sweep)
    if args.launcher != "local":
        return launch_array(sweep, args)
    size = f"{grid_size(sweep.space)} combinations" if sweep.sampler == "grid" else f"{sweep.n_trials} trials"
    fixed = sweep.meta.get("fixed_groups") or {}
    kept = "; fixed: " + fixed_text(fixed) if fixed else ""
    print(f"bench sweep: study {sweep.name} ({sweep.storage_spec.display}): {sweep.base.model} on "
          f"{sweep.base.task}, space {sweep.space['name']}, {sweep.sampler} over {size}{kept}, "
          f"{sweep.direction} val {sweep.metric}, {args.workers} worker(s)", flush=True)
    failed_workers = run_workers(sweep, args.workers)
    study = sweep.load()
    confirm_seeds(sweep, study, sweep.confirm_seeds)
    has_best = best_trial(study) is not None
    sweep.close()                       # the status below opens its own: one connection at a time
    args.study = sweep.name
    cmd_status(args)
    if has_best:
        print(f"reproduce the best trial: bench sweep best --study {shlex.quote(sweep.name)}{args.storage_ref}")
    if failed_workers:      # their trials were re-queued and run; the exit code still says so
        print(f"bench sweep: {failed_workers} worker process(es) exited with an error (see above)", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    from bench.flags import add_run_arguments, nonneg_int as _nonneg, positive_int as _pos

    p = sub.add_parser(
        "sweep", help="Optuna sweep over per-group optimizers, learning rates and run flags",
        description="Run an Optuna study whose trials are ordinary `bench run`s (action run, the default), "
                    "or show a study's progress (status) or its best trial as a `bench run` command (best).",
        epilog="examples:\n  bench sweep --model scurnn --task copying --space appendix-a3 --workers 2\n"
               "  bench sweep --model scurnn --task adding --space lr-ranges --sampler tpe --n-trials 60 "
               "--storage postgresql://user@host/db --study scurnn-adding\n"
               "  bench sweep status --study scurnn-adding --storage postgresql://user@host/db\n"
               "  bench sweep best --study scurnn-adding --storage postgresql://user@host/db",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=ACTIONS, default="run",
                   help="run (default): run the sweep; status: trials by state, best, running; "
                        "best: the best trial as a `bench run` command line; retry: re-queue failed points")
    add_run_arguments(p, model_required=False, task_required=False)   # status/best name the study instead
    g = p.add_argument_group("sweep")
    g.add_argument("--space", default="appendix-a3",
                   help=f"search space: a built-in name ({', '.join(builtin_spaces())}) or a YAML file "
                        f"(default appendix-a3; format: docs/sweeps.md)")
    g.add_argument("--sampler", choices=SAMPLERS, default="grid",
                   help="grid: every combination once; tpe: Bayesian, conditional LR per optimizer (default grid)")
    g.add_argument("--n-trials", type=_pos, help="total trials in the study for --sampler tpe (default 50)")
    g.add_argument("--workers", type=_pos, default=1,
                   help="worker processes (default 1): local processes, or array tasks with --launcher slurm")
    add_cluster_arguments(g, storage_default="$BENCH_STORAGE, else RUNS_DIR/sweeps/STUDY.journal",
                          study_default="MODEL-TASK-SPACE-SAMPLER")
    g.add_argument("--sampler-seed", type=_nonneg, metavar="SEED",
                   help="seed TPE (worker k uses SEED + k; reproducible with one worker)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the study, its size and the first trials; touch no storage and run nothing")
    g.add_argument("--confirm-seeds", type=_nonneg, default=0, metavar="K",
                   help="re-run the best config on K more seeds when the study is done")
    g.add_argument("--no-prune", action="store_true", help="never prune (default: median pruner on val metric)")
    p.set_defaults(func=cmd_sweep)


def add_cluster_arguments(g, *, storage_default: str, study_default: str) -> list:
    """The flags that put a study's workers on a cluster: launcher, SLURM options, storage, study
    name, heartbeat (``bench sweep`` and ``bench reproduce --storage``). Returns their actions."""
    from bench.flags import nonneg_int as _nonneg, positive_int as _pos

    actions = []

    def add(*names, **kw) -> None:
        actions.append(g.add_argument(*names, **kw))

    add("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
        help="local: worker processes here (default); slurm: a SLURM job array through submitit "
             "(requeued on preemption); submitit-local: the same array as local processes")
    add("--partition", help="SLURM partition (--launcher slurm)")
    add("--account", help="SLURM account to charge (--launcher slurm)")
    add("--qos", help="SLURM quality of service (--launcher slurm)")
    add("--mem", help="SLURM memory per worker, e.g. 32G (--launcher slurm)")
    add("--constraint", help="SLURM node features, e.g. a100 (--launcher slurm)")
    add("--setup", action="append", metavar="LINE",
        help="shell line run in each job before the worker, e.g. 'module load cuda' (repeatable)")
    add("--gpus-per-worker", type=_nonneg, default=0, help="GPUs per array task (default 0)")
    add("--timeout-min", type=_pos, default=24 * 60, help="time limit per array task (default 1440)")
    add("--slurm-dir", help="submitit job folder, on shared storage (default RUNS_DIR/slurm/STUDY)")
    add("--wait", action="store_true",
        help="with a launcher: wait for the array and print the status; a local worker: stay while any "
             "trial runs anywhere (default: leave when nothing is left to run here)")
    add("--storage", help="journal file path, or postgresql://USER@HOST[:PORT]/DB for several nodes "
                          f"(default: {storage_default}). Keep passwords off the command line: "
                          "PGPASSWORD, ~/.pgpass, or --storage-file")
    add("--storage-file", metavar="PATH",
        help="read the storage URL from the first line of PATH (e.g. mode 0600 on shared storage)")
    add("--study", help=f"study name (default {study_default}); same name + storage = same study")
    add("--heartbeat", type=_pos, default=60, metavar="SECONDS",
        help="heartbeat interval for database storage; a trial silent for 2x this is failed "
             "and re-run (default 60)")
    return actions

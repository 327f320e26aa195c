"""``--launcher slurm|submitit-local``: the sweep's workers as one job array (submitit), each
running the submitter's own command line."""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path

from bench.secrets import STORAGE_ENV
from bench.sweep.errors import SweepError
from bench.sweep.report import cmd_status
from bench.sweep.study import Sweep


_LAUNCH_FLAGS = {"--launcher", "--partition", "--gpus-per-worker", "--timeout-min", "--workers", "--slurm-dir",
                 "--account", "--qos", "--mem", "--constraint", "--setup"}


def worker_argv(argv: list[str]) -> list[str]:
    """The command line of one array worker: the submitter's, minus the launcher flags."""
    for flag in _LAUNCH_FLAGS:
        argv = drop_flag(argv, flag)
    return [a for a in argv if a != "--wait"] + ["--workers", "1"]


def drop_flag(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        elif not item.startswith(flag + "="):
            out.append(item)
    return out


@contextlib.contextmanager
def environment(values: dict):
    """``values`` in os.environ for the duration (what child processes started inside inherit)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_launcher(args) -> None:
    if args.launcher == "slurm" and shutil.which("srun") is None:
        raise SweepError("--launcher slurm: no SLURM on this machine (srun not found); run it on a login node, "
                         "or use --launcher submitit-local to run the same array as local processes")
    if args.launcher == "local" and any(getattr(args, k, None) for k in _SLURM_OPTIONS):
        given = [f"--{k.replace('_', '-')}" for k in _SLURM_OPTIONS if getattr(args, k, None)]
        raise SweepError(f"{', '.join(given)} only apply with --launcher slurm or submitit-local")


_SLURM_OPTIONS = ("partition", "account", "qos", "mem", "constraint", "setup")


def launch_array(sweep: Sweep, args) -> int:
    """Submit ``--workers`` sweep workers as one job array (submitit); the study is ready."""
    from bench.slurm import submit_workers

    if args.launcher == "slurm" and not args.storage:
        print("bench sweep: warning: a journal file has no heartbeats and needs shared storage; "
              "prefer --storage postgresql://... on a cluster", file=sys.stderr)
    argv = drop_flag(drop_flag(drop_flag(worker_argv(getattr(args, "argv", None) or sys.argv[1:]), "--storage"),
                                 "--storage-file"), "--study") + ["--study", sweep.name]
    if sweep.storage_spec.kind == "journal":
        # workers must find the same journal wherever they start: pin it to an absolute path
        args.storage = str(Path(sweep.storage_spec.url).resolve())
        argv += ["--storage", args.storage]
        args.storage_ref = f" --storage {shlex.quote(args.storage)}"
    elif args.storage_file:
        argv += ["--storage-file", str(Path(args.storage_file).expanduser().resolve())]
    # a database URL may hold a password: the jobs inherit it through the environment at submission
    # (sbatch exports the submitter's environment; submitit's local executor too), so it is in no
    # job script, pickle, log or process listing
    inherited = {} if sweep.storage_spec.kind == "journal" or args.storage_file else {STORAGE_ENV: args.storage}
    folder = Path(args.slurm_dir or Path(args.runs_dir) / "slurm" / sweep.name)
    with environment(inherited):
        jobs = submit_workers(argv, workers=args.workers, folder=folder, gpus_per_worker=args.gpus_per_worker,
                              timeout_min=args.timeout_min,
                              cluster="local" if args.launcher == "submitit-local" else "slurm",
                              **{k: getattr(args, k, None) for k in _SLURM_OPTIONS})
    print(f"bench sweep: submitted {len(jobs)} worker(s) for study {sweep.name}: job "
          f"{jobs[0].job_id.split('_')[0]}; logs in {folder}; watch with `bench sweep status --study "
          f"{shlex.quote(sweep.name)}{args.storage_ref}`", flush=True)
    if args.wait:
        failed = 0
        for job in jobs:
            try:
                job.result()
            except Exception as exc:      # a worker's failure is reported, the others still count
                failed += 1
                print(f"bench sweep: worker job {job.job_id} failed: {exc}", file=sys.stderr)
        args.study = sweep.name
        cmd_status(args)
        return 1 if failed else 0
    return 0

"""``bench sweep``: Optuna studies over per-group optimizers, learning rates and any run flag.

Every trial is a normal run through :func:`bench.run.run` (its own result.json and W&B run); the
study only chooses the config overrides. Search spaces are YAML data in ``sweeps/`` (format:
docs/sweeps.md). Storage is a journal file under the runs directory by default, or PostgreSQL
(``postgresql://...``) with heartbeats for clusters.

How workers share a study (Optuna docs: GridSampler, enqueue_trial, RDBStorage heartbeats):
- Grid: every combination is enqueued exactly once (under a study lock), and workers claim only
  WAITING trials; Optuna's GridSampler would duplicate points across workers.
- TPE: a worker with nothing to claim enqueues one empty trial while the study has fewer than
  ``--n-trials`` (under the lock), then claims it; the sampler fills in its parameters.
- A killed worker: on a database its trial's heartbeat goes stale and Optuna FAILs and re-queues
  it with the same parameters (RetryHeartbeatStaleTrialCallback); on a journal file a trial whose
  process (same host) is gone is FAILED and re-queued the same way. Ctrl-C and SIGTERM give the
  running trial back with its checkpoint, so re-running the same command resumes the sweep.
- A worker leaves when nothing is waiting and nothing running can come back to the queue.

Modules: ``space`` (search spaces), ``storage`` (journal/database, lock, worker identity),
``study`` (the validated sweep and its study), ``worker`` (claim, reap, leave), ``trial`` (run one
trial, give it back or retry it), ``report``
(status, best), ``launch`` (SLURM arrays), ``cli`` (the command).
"""
from bench.sweep.cli import build_sweep, cmd_retry, dry_run, register, resolve_storage_args
from bench.sweep.errors import SpaceError, StorageError, SweepError, TrialTakenOver, WorkerUnfit
from bench.sweep.launch import check_launcher, launch_array, worker_argv
from bench.sweep.report import best_command, best_trial, cmd_best, cmd_status, confirm_records
from bench.sweep.space import (apply_overrides, builtin_spaces, grid_points, grid_size, load_space, sample_point,
                               space_for_model, validate_space)
from bench.sweep.storage import StorageSpec, open_storage, owner, owner_dead, parse_storage
from bench.sweep.study import Sweep, prepare
from bench.sweep.trial import MAX_TRIAL_RETRIES, run_trial
from bench.sweep.worker import claim, confirm_seeds, preflight, run_workers, work

__all__ = ["MAX_TRIAL_RETRIES", "SpaceError", "StorageError", "StorageSpec", "Sweep", "SweepError", "TrialTakenOver",
           "WorkerUnfit", "apply_overrides", "best_command", "best_trial", "build_sweep", "builtin_spaces",
           "check_launcher", "claim", "cmd_best", "cmd_retry", "cmd_status", "confirm_records", "confirm_seeds",
           "dry_run", "grid_points", "grid_size", "launch_array", "load_space", "open_storage", "owner", "owner_dead",
           "parse_storage", "prepare", "preflight", "register", "resolve_storage_args", "run_trial", "run_workers",
           "sample_point", "space_for_model", "validate_space", "work", "worker_argv"]

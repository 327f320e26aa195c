"""``bench sync RUNS_DIR``: the W&B view of finished runs, made from their files.

For runs that ran offline or with ``--wandb disabled``: each run folder under RUNS_DIR with a
result.json gets its W&B run (config and summary from result.json, history from the curves),
or has its offline W&B run uploaded when online. The W&B run id stays in the run folder, so
syncing again updates that run and never makes a second one (tracking.sync_run).
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench.errors import ConfigError

SYNC_MODES = ("auto", "online", "offline")


def cmd_sync(args) -> int:
    from bench.leaderboard.load import check_result
    from bench.results import iter_results
    from bench.secrets import mask_text
    from bench.tracking import check_online, sync_run, wandb_mode

    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"no runs directory {runs_dir}")
    mode = wandb_mode(args.wandb)
    if mode not in ("online", "offline"):
        raise ConfigError(f"W&B is disabled (--wandb {args.wandb}, WANDB_MODE=disabled?): nothing to sync to; "
                          f"use --wandb offline or online")
    if mode == "online":
        problem = check_online()
        if problem and args.wandb == "online":
            raise ConfigError(f"W&B cannot be used online ({problem}); fix the login, or make offline "
                              f"W&B runs with --wandb offline and upload them later")
        if problem:
            print(f"bench sync: warning: W&B cannot be used online ({problem}); making offline W&B runs",
                  file=sys.stderr)
            mode = "offline"
    counts: dict[str, int] = {}
    failed = 0
    for path, result, error in iter_results(runs_dir):
        run_dir = path.parent
        error = error or check_result(result)
        if error:
            print(f"skipped {run_dir}: {error}")
            failed += 1
            continue
        try:
            kind, how = sync_run(run_dir, result, mode)
        except Exception as exc:        # one run's failure (a bad upload) does not stop the others
            print(f"failed {run_dir}: {mask_text(str(exc))}")
            failed += 1
            continue
        print(f"{kind} ({how}): {run_dir}")
        counts[kind] = counts.get(kind, 0) + 1
    total = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no finished runs"
    print(f"bench sync ({mode}): {total}" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("sync", help="make or update the W&B runs of finished runs from their files",
                       description="Make or update the W&B runs of the finished runs under RUNS_DIR from "
                                   "their result.json and curves (runs made offline or with --wandb disabled); "
                                   "a second sync updates the same W&B runs, never duplicates them.")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="folder searched for result.json files")
    p.add_argument("--wandb", choices=SYNC_MODES, default="auto",
                   help="W&B mode; auto = online only if you configured W&B, offline otherwise (WANDB_MODE wins)")
    p.set_defaults(func=cmd_sync)

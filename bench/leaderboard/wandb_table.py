"""Sharing the leaderboard on W&B: one ``wandb.Table`` per task, and the same tables as one
versioned artifact, logged to one W&B run per runs folder.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .aggregate import Row, group_by_task
from .tables import flat_rows


def log_wandb(rows: list[Row], runs_dir: str) -> tuple[str, str]:
    """Log the leaderboard as ``wandb.Table``s (one per task) to one run, in the configured
    mode (offline unless the user set up W&B; ``WANDB_MODE`` wins). Returns (mode, run folder)."""
    import wandb

    from bench.tracking import WANDB_PROJECT, wandb_mode

    mode = wandb_mode("auto")
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = {} if os.environ.get("WANDB_DIR") else {"dir": str(runs_dir)}
    run = wandb.init(project=WANDB_PROJECT, job_type="leaderboard", group="leaderboard", name="leaderboard",
                     id=leaderboard_run_id(runs_dir), resume="allow", mode=mode, reinit="create_new",
                     config={"runs_dir": str(runs_dir), "n_configs": len(rows)}, **kwargs)
    try:
        # W&B versions an artifact by its content: an unchanged leaderboard adds no new version
        artifact = wandb.Artifact("leaderboard", type="leaderboard",
                                  description=f"bench leaderboard of {Path(runs_dir).resolve()}")
        for task, task_rows in group_by_task(rows).items():
            headers, data = flat_rows(task_rows)
            table = wandb.Table(columns=headers, data=data)
            run.log({f"leaderboard/{task}": table})
            artifact.add(table, task)
        run.log_artifact(artifact)
        folder = str(Path(run.dir).parent) if mode != "disabled" else ""
    finally:
        run.finish()
    return mode, folder


def leaderboard_run_id(runs_dir: str) -> str:
    """One W&B run per runs folder: calling ``bench leaderboard --wandb`` again continues it
    (online) instead of making a new run each time."""
    return "leaderboard-" + hashlib.sha256(str(Path(runs_dir).resolve()).encode()).hexdigest()[:12]

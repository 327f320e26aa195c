"""Experiment tracking: CSV always (the offline-proof record), W&B as a view.

W&B mode: ``auto`` respects ``WANDB_MODE`` if set, goes online only if the user has an API
key configured, and is offline otherwise; it never prompts for a login.
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path

WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "unitary-rnn-bench")


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def make_loggers(cfg, run_dir: Path, run_name: str):
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    mode = wandb_mode(cfg.wandb)
    if mode != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        tags = [cfg.model, cfg.task] + [f"{k}={v}" for k, v in cfg.tags.items() if k in ("study", "trial")]
        tags += [f"{k}={v}" for k, v in (cfg.tags.get("choices") or {}).items()]   # a sweep's sampled values
        tags = [t[:64] for t in tags]                                               # W&B's tag length limit
        loggers.append(WandbLogger(
            project=WANDB_PROJECT, name=run_name, save_dir=str(run_dir), mode=mode,
            group=cfg.tags.get("study") or f"{cfg.model}/{cfg.task}/{cfg.config_hash()}",
            job_type="sweep-trial" if "study" in cfg.tags else "train",
            tags=tags, config=cfg.to_dict(),
        ))
    return loggers, mode


def finish_wandb():
    """Close the W&B run: WandbLogger reuses an open run, so every run must end its own."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()

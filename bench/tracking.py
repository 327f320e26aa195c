"""Experiment tracking: CSV always (the offline-proof record), W&B as a view.

W&B mode: ``auto`` respects ``WANDB_MODE`` if set, goes online only if wandb itself finds
credentials for its configured host (environment, .netrc, settings), and is offline otherwise;
it never prompts for a login. An online start that fails (no network, a bad key, a server
down) waits at most ``BENCH_WANDB_TIMEOUT`` seconds (default 60), says so in one line on
stderr and logs offline instead: W&B never fails a run.
"""
from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "unitary-rnn-bench")
# Set when this process found W&B unusable online (check_online): its later runs log offline
# at once instead of each waiting out the timeout.
_offline_reason: str | None = None


def _timeout() -> float:
    return float(os.environ.get("BENCH_WANDB_TIMEOUT", "60"))


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if _wandb_credentials() else "offline"


def _wandb_credentials() -> bool:
    """Does wandb have an API key for the host it would talk to? Asked the way wandb.login does
    (env, .netrc entry of its configured base URL, settings files); a wandb without that module
    falls back to the .netrc entry of $WANDB_BASE_URL or api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        return bool(wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key)
    except ImportError:
        pass
    host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].rstrip("/")
    try:
        return bool(netrc.netrc().authenticators(host))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def check_online() -> str | None:
    """Can W&B be used online now? Its key is checked against its server in a bounded wait
    (wandb.login, never prompting, writing nothing). Returns why not, or None; when not, this
    process's later runs log offline at once. A sweep worker asks once before its first trial."""
    global _offline_reason
    import wandb

    try:
        ok = wandb.login(verify=True, timeout=max(1, round(_timeout())), prompt=False, relogin=False)
        _offline_reason = None if ok else "wandb found no API key"
    except Exception as exc:        # AuthenticationError, CommError, a timeout
        _offline_reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        wandb.teardown()
    return _offline_reason


def start_wandb(mode: str, **init_kwargs):
    """``wandb.init`` in ``mode``; an online start that fails within the bounded wait falls back
    to offline with a one-line warning. Returns (run, the mode it runs in)."""
    import wandb

    settings = wandb.Settings(init_timeout=_timeout(), silent=True)
    if mode == "online" and _offline_reason:     # said once already, by whoever called check_online
        return wandb.init(mode="offline", settings=settings, **init_kwargs), "offline"
    try:
        return wandb.init(mode=mode, settings=settings, **init_kwargs), mode
    except Exception as exc:        # wandb raises CommError, UsageError, AuthenticationError, ...
        if mode != "online":
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"bench: warning: W&B could not start online ({first}); logging offline instead, "
              f"sync later with `wandb sync`", file=sys.stderr)
        wandb.teardown()            # a fresh wandb service and settings for the offline run
        return wandb.init(mode="offline", settings=settings, **init_kwargs), "offline"


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
        # started here, not lazily inside fit, so a failing online start is caught in one place
        run, mode = start_wandb(
            mode, project=WANDB_PROJECT, name=run_name, dir=str(run_dir),
            group=cfg.tags.get("study") or f"{cfg.model}/{cfg.task}/{cfg.config_hash()}",
            job_type="sweep-trial" if "study" in cfg.tags else "train",
            tags=tags, config=cfg.to_dict(),
        )
        loggers.append(WandbLogger(experiment=run, save_dir=str(run_dir)))
    return loggers, mode


def finish_wandb():
    """Close the W&B run: WandbLogger reuses an open run, so every run must end its own."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()

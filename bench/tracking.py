"""Experiment tracking: CSV always (the offline-proof record), W&B as a view of the result files.

W&B mode: ``auto`` respects ``WANDB_MODE`` if set, goes online only if wandb itself finds
credentials for its configured host (environment, .netrc, settings), and is offline otherwise;
it never prompts for a login. An online start that fails (no network, a bad key, a server
down) waits at most ``BENCH_WANDB_TIMEOUT`` seconds (default 60), says so in one line on
stderr and logs offline instead: W&B never fails a run.

What a W&B run holds, and where it comes from:

* its config is the run's config (``result.json["config"]``);
* its history is what Lightning logs, row for row the CSV curve (``csv/metrics.csv``), against
  ``trainer/global_step``; test metrics are ``test/*`` (final weights) and ``best_ckpt_test/*``
  (the best validation checkpoint), which result.json names ``test_*`` and ``best_ckpt_test_*``;
* its summary is :func:`result_summary` of the very dict written to result.json (every field
  but the config, with the metrics at top level under their result.json names), plus W&B's own
  best of each validation metric (``val/acc`` -> ``{"max": ..., "last": ...}``, see
  :func:`define_metrics`);
* its state: the exit code is the one ``bench run`` exits with (:data:`bench.results.EXIT_CODES`):
  0 is *finished*, anything else *failed* (a diverged run; a preempted part, until its resumed
  part finishes the same W&B run); a diverged or pruned run also carries its status as a tag.
  ``run.mark_preempting()`` is not used: with wandb 0.31, ``finish()`` after it returns before
  the run's records are written, and a process that exits then (as ``bench run`` does when
  preempted) can lose the run's end;
* its id is kept in the run folder (:data:`RUN_FILE`), so ``bench run --resume`` continues the
  same W&B run (online: ``resume="allow"``; offline: a second offline folder with the same id,
  marked resumed, which ``wandb sync`` uploads into the same run) and ``bench sync`` updates the
  run it made before instead of making another.
"""
from __future__ import annotations

import json
import math
import netrc
import os
import secrets
import string
import sys
import threading
import time
from pathlib import Path

WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "unitary-rnn-bench")
# In the run folder: the W&B run's id and project (and what `bench sync` made of the folder)
RUN_FILE = "wandb_run.json"
# Statuses that a W&B run also carries as a tag (its state alone would not tell them apart)
STATUS_TAGS = ("diverged", "pruned")
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

    answer: list = []

    def login():
        try:
            answer.append(wandb.login(verify=True, timeout=max(1, round(_timeout())), prompt=False, relogin=False))
        except Exception as exc:    # AuthenticationError, CommError, a timeout
            answer.append(exc)

    # wandb's own timeout covers one request; its retries can take longer (11 s seen for 3 s):
    # a daemon thread with a hard deadline bounds the whole check.
    deadline = 2 * _timeout() + 5
    thread = threading.Thread(target=login, name="bench-wandb-login", daemon=True)
    thread.start()
    thread.join(deadline)
    if not answer:
        _offline_reason = f"no answer from the W&B server within {deadline:.0f} s"
    elif isinstance(answer[0], Exception):
        _offline_reason = _first_line(answer[0])
    else:
        _offline_reason = None if answer[0] else "wandb found no API key"
    if _offline_reason and answer:     # (a login still waiting is left alone, not torn down under it)
        wandb.teardown()
    return _offline_reason


def _first_line(exc: Exception) -> str:
    """A W&B error in one line (its first, at most 200 characters; the type if it says nothing)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


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
        first = _first_line(exc)
        print(f"bench: warning: W&B could not start online ({first}); logging offline instead, "
              f"sync later with `wandb sync`", file=sys.stderr)
        wandb.teardown()            # a fresh wandb service and settings for the offline run
        return wandb.init(mode="offline", settings=settings, **init_kwargs), "offline"


def run_name(config: dict) -> str:
    return f"{config['model']}-{config['task']}-n{config['n_hidden']}-s{config['seed']}"


def init_kwargs(config: dict, config_hash: str) -> dict:
    """``wandb.init``'s arguments for a run with this (resolved) config, the same for a run
    logged live and one ``bench sync`` makes from its files."""
    tags = config.get("tags") or {}
    names = [config["model"], config["task"]] + [f"{k}={v}" for k, v in tags.items() if k in ("study", "trial")]
    names += [f"{k}={v}" for k, v in (tags.get("choices") or {}).items()]     # a sweep's sampled values
    return dict(project=WANDB_PROJECT, name=run_name(config),
                group=tags.get("study") or f"{config['model']}/{config['task']}/{config_hash}",
                job_type="sweep-trial" if "study" in tags else "train",
                tags=[t[:64] for t in names], config=config)                  # W&B's tag length limit


def read_run_file(run_dir: Path) -> dict:
    """What the run folder says about its W&B run (``{}`` when nothing)."""
    try:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("id"), str) else {}
    except (OSError, ValueError):
        return {}


def write_run_file(run_dir: Path, data: dict) -> None:
    from bench.atomic import atomic_write_text

    atomic_write_text(Path(run_dir) / RUN_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")


def run_identity(run_dir: Path) -> tuple[dict, bool]:
    """The folder's W&B run (id, project), made and stored on first use; and whether it existed
    (a resumed part, or a folder synced before), in which case W&B is asked to resume it."""
    known = read_run_file(run_dir)
    if known:
        return {"id": known["id"], "project": known.get("project") or WANDB_PROJECT}, True
    # W&B's own id alphabet and length (8 base-36 characters)
    ident = {"id": "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)),
             "project": WANDB_PROJECT}
    write_run_file(run_dir, ident)
    return ident, False


def define_metrics(run, metric: str | None, metric_mode: str | None) -> None:
    """History against ``trainer/global_step`` (as Lightning's WandbLogger does for runs it
    starts itself), and the best of each validation metric in the summary beside its last value:
    ``val/<metric>`` and ``tracked_test/<metric>`` by the task's mode, ``val/loss`` by min."""
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    best = {"val/loss": "min"}
    if metric and metric_mode in ("min", "max"):
        best.update({f"val/{metric}": metric_mode, f"tracked_test/{metric}": metric_mode})
    for name, mode in best.items():
        run.define_metric(name, step_metric="trainer/global_step", summary=f"{mode},last")


def result_summary(result: dict) -> dict:
    """The W&B summary of a run, from the dict written to result.json: every field but the
    config (the W&B run's config), with the metrics at top level under their result.json names
    (``best_val_acc``, ``test_acc``, ``best_ckpt_test_acc``, ...). Passed through JSON as the
    file is, so the two cannot differ."""
    summary = {k: v for k, v in result.items() if k not in ("config", "metrics")}
    summary.update(result.get("metrics") or {})
    return json.loads(json.dumps(summary, default=str))


def make_loggers(cfg, run_dir: Path, *, metric: str | None = None, metric_mode: str | None = None):
    """The CSV logger, and a WandbLogger on a W&B run started here unless W&B is disabled.
    Returns (loggers, the W&B mode the run logs in, its W&B run id or None)."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    mode = wandb_mode(cfg.wandb)
    if mode == "disabled":
        return loggers, mode, None
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = init_kwargs(cfg.to_dict(), cfg.config_hash())
    ident, known = run_identity(run_dir)
    kwargs.update(ident, **({"resume": "allow"} if known else {}))
    # started here, not lazily inside fit, so a failing online start is caught in one place
    run, mode = start_wandb(mode, dir=str(run_dir), **kwargs)
    define_metrics(run, metric, metric_mode)
    loggers.append(WandbLogger(experiment=run, save_dir=str(run_dir)))
    return loggers, mode, run.id


def finish_wandb(exit_code: int = 0, *, summary: dict | None = None, status: str | None = None):
    """Close the W&B run (WandbLogger reuses an open run, so every run must end its own): write
    ``summary`` into its summary, tag it with ``status`` if that is one of :data:`STATUS_TAGS`,
    and finish it with ``exit_code`` (0: finished, anything else: failed). A W&B failure here is
    one warning line, never the run's failure."""
    wandb = sys.modules.get("wandb")         # not imported: no W&B run was started
    run = getattr(wandb, "run", None)
    if run is None:
        return
    try:
        if summary:
            run.summary.update(summary)
        if status in STATUS_TAGS:
            run.tags = tuple(t for t in (run.tags or ()) if t != status) + (status,)
    except Exception as exc:        # the result files are the record; W&B is a view of them
        print(f"bench: warning: W&B summary not recorded ({type(exc).__name__}: {exc})", file=sys.stderr)
    run.finish(exit_code=exit_code)


def offline_folders(run_dir: Path) -> list[Path]:
    """The run folder's offline W&B runs, oldest first (a resumed run has one per part)."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*"))


def sync_run(run_dir: Path, result: dict, mode: str) -> tuple[str, str]:
    """Bring the W&B view of a finished run up to date in ``mode`` ("offline" or "online");
    returns what it did: "made", "uploaded" or "up to date", and in a few words.

    A run logged live online is already there. Offline, a run with an offline W&B run in its
    folder (logged live, or made by an earlier sync) is up to date; one without (run with
    ``--wandb disabled``) gets one made from its files (:func:`log_from_files`). Online, the
    offline runs are uploaded with ``wandb sync`` (in start order, into one W&B run), or, where
    there are none, the run is made online from the files. The folder remembers what was synced
    (:data:`RUN_FILE`), so a second sync does nothing and never makes a second W&B run.
    """
    run_dir = Path(run_dir)
    state = read_run_file(run_dir)
    synced = dict(state.get("synced") or {})
    live = (result.get("wandb") or {}).get("mode")
    if live == "online" or "online" in synced:
        return "up to date", "on W&B"
    folders = offline_folders(run_dir)
    if mode == "offline" and folders:
        return "up to date", "an offline W&B run is there"
    if mode == "online" and folders:
        _upload(folders)
        kind, how = "uploaded", f"{len(folders)} offline W&B run folder(s)"
    else:
        made = log_from_files(run_dir, result, mode)
        kind, how = "made", f"from result.json and {result.get('curves') or 'no curves'}"
        if made != mode:        # an online start that failed: the record is offline, upload it later
            kind, how, mode = "made", how + f"; {made}, as W&B could not start {mode}", made
    state = read_run_file(run_dir)          # log_from_files stored the id
    state["synced"] = {**synced, mode: {"how": f"{kind} {how}", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    write_run_file(run_dir, state)
    return kind, how


def log_from_files(run_dir: Path, result: dict, mode: str) -> str:
    """Make the W&B run of a finished run from its files, as the live run would have logged it:
    the same init arguments and metric definitions, one history row per CSV row (against
    ``trainer/global_step``), the summary from result.json, the exit code of its status. Uses
    (or stores) the folder's W&B run id. Returns the mode it logged in (an online start that
    fails logs offline, as a run does)."""
    import pandas as pd

    from bench.results import EXIT_CODES

    run_dir = Path(run_dir)
    os.environ.setdefault("WANDB_SILENT", "true")
    config = result["config"]
    kwargs = init_kwargs(config, result["config_hash"])
    ident, known = run_identity(run_dir)
    kwargs.update(ident, **({"resume": "allow"} if known else {}))
    run, mode = start_wandb(mode, dir=str(run_dir), **kwargs)
    try:
        metric = result.get("metric") or {}
        define_metrics(run, metric.get("name"), metric.get("mode"))
        curves = pd.read_csv(run_dir / result["curves"]) if result.get("curves") else None
        for row in ([] if curves is None else curves.to_dict("records")):
            step = row.pop("step", None)
            values = {k: (int(v) if k == "epoch" else v) for k, v in row.items()
                      if not (v is None or (isinstance(v, float) and math.isnan(v)))}
            if step is not None and not (isinstance(step, float) and math.isnan(step)):
                values["trainer/global_step"] = int(step)
            run.log(values)
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finish_wandb(EXIT_CODES.get(result["status"], 1), summary=result_summary(result), status=result["status"])
    return mode


def _upload(folders: list[Path]) -> None:
    """``wandb sync`` the offline run folders (one run's parts: W&B uploads them in start order
    into the same run). Its own process, without this process's W&B service."""
    import subprocess

    from bench.errors import ConfigError
    from bench.secrets import mask_text

    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run([sys.executable, "-m", "wandb", "sync", *map(str, folders)], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=max(600, 10 * _timeout()))
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
        raise ConfigError(f"wandb sync {folders[0].parent} failed: {mask_text(last)[:300]}")

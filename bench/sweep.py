"""``bench sweep``: Optuna studies over per-group optimizers, learning rates and any run flag.

Every trial is a normal run through :func:`bench.run.run` (its own result.json and W&B run);
the study only chooses the config overrides. Search spaces are YAML data in ``sweeps/``
(format: docs/sweeps.md). Storage is a journal file under the runs directory by default,
or PostgreSQL (``postgresql://...``) with heartbeats for clusters.

How workers share a study (reference/harness.md §2):
- Grid: every combination is enqueued exactly once (under a study lock), and workers only pop
  WAITING trials; a worker stops when none is waiting and none it could inherit is running.
  Optuna's GridSampler would duplicate points across workers.
- TPE: workers pop WAITING trials (retries) first, then ask the sampler until ``--n-trials``
  trials exist in the study.
- A killed worker: on PostgreSQL its trial's heartbeat goes stale, the trial is FAILED and
  re-queued with the same parameters (RetryHeartbeatStaleTrialCallback); on a journal file a
  trial whose process (same host) is gone is FAILED and re-queued the same way. Ctrl-C fails
  the running trial and re-queues it, so re-running the same command resumes the sweep.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bench.models.errors import BenchError
from bench.secrets import STORAGE_ENV, mask_text, storage_url

SAMPLERS = ("grid", "tpe")
ACTIONS = ("run", "status", "best", "retry")
# RunConfig fields a space may sample (besides per-group optimizers), plus "model_options.KEY".
RUN_FIELDS = ("seed", "n_hidden", "params", "seq_len", "batch_size", "max_steps", "max_epochs", "val_every",
              "grad_clip", "data_seed", "scale")
SPACE_KEYS = ("name", "description", "source", "groups", "run", "pruner")
PRUNER_KEYS = ("n_startup_trials", "n_warmup_steps", "interval_steps")
DEFAULT_MAX_RETRY = 3


class SweepError(BenchError):
    """A sweep that cannot start or be read: mismatched study, missing study, bad flags."""


class SpaceError(SweepError):
    """An unknown or malformed search space, or one that does not fit the model."""


class StorageError(SweepError):
    """A storage URL that is malformed, unsupported or unreachable."""


class WorkerUnfit(SweepError):
    """This worker's node cannot run any trial (runs dir, data): it stops and takes none."""


class TrialTakenOver(Exception):
    """The study finished this trial while its worker was stalled (its heartbeat went stale and
    another worker re-ran it): the stalled worker drops it."""


# A trial's own failure (an exception inside training; divergence is a result, not a failure)
# is re-queued this many times before its point stays FAILED; `bench sweep retry` re-queues it.
MAX_TRIAL_RETRIES = 2


# ---------------------------------------------------------------------------------------------
# Search spaces
# ---------------------------------------------------------------------------------------------
def builtin_spaces() -> list[str]:
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("bench.sweeps").iterdir() if p.name.endswith(".yaml"))


def load_space(spec: str) -> dict:
    """A built-in space name (``appendix-a3``) or a YAML path -> the validated space dict."""
    import yaml
    from importlib.resources import files

    if spec.endswith((".yaml", ".yml")) or os.sep in spec or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise SpaceError(f"search space file {spec!r} does not exist")
        text, origin = path.read_text(), str(path)
    else:
        res = files("bench.sweeps").joinpath(f"{spec}.yaml")
        if not res.is_file():
            raise SpaceError(f"unknown search space {spec!r}; built-in spaces: {', '.join(builtin_spaces())} "
                             f"(or give the path of a YAML file)")
        text, origin = res.read_text(), spec
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"search space {origin}: not valid YAML: {exc}") from None
    return validate_space(data, origin)


def _number(value, where: str) -> float:
    # PyYAML reads "1e-3" (no dot) as a string; accept it as the number it means.
    if isinstance(value, bool):
        raise SpaceError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{where}: expected a number, got {value!r}") from None


def _axis(spec, where: str, *, numeric: bool, positive: bool = False):
    """A list of choices, or a range ``{low, high[, log][, step]}``; returns the normalised form."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"low", "high", "log", "step"})
        if unknown or "low" not in spec or "high" not in spec:
            raise SpaceError(f"{where}: a range needs keys low and high (optional: log, step); "
                             f"got keys {sorted(spec)}")
        low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
        log, step = spec.get("log", False), spec.get("step")
        if not isinstance(log, bool):
            raise SpaceError(f"{where}.log: expected true or false, got {log!r}")
        if not low <= high:
            raise SpaceError(f"{where}: low ({low}) must not exceed high ({high})")
        if (log or positive) and not low > 0:
            raise SpaceError(f"{where}: low must be positive{' for a log range' if log else ''}, got {low}")
        out = {"low": low, "high": high, "log": log}
        if step is not None:
            out["step"] = _number(step, f"{where}.step")
            if log:
                raise SpaceError(f"{where}: a range cannot have both log and step")
        return out
    if not isinstance(spec, list) or not spec:
        raise SpaceError(f"{where}: expected a non-empty list of values or a range {{low, high}}, got {spec!r}")
    values = []
    for i, v in enumerate(spec):
        if numeric:
            v = _number(v, f"{where}[{i}]")
            if positive and not v > 0:
                raise SpaceError(f"{where}[{i}]: must be positive, got {v!r}")
        elif not isinstance(v, (str, int, float, bool)):
            raise SpaceError(f"{where}[{i}]: expected a number or a string, got {v!r}")
        values.append(v)
    if len(set(map(repr, values))) != len(values):
        raise SpaceError(f"{where}: duplicate values in {values}")
    return values


def validate_space(data, origin: str = "space") -> dict:
    """Check every key at load time; errors name the bad key and what is allowed."""
    from bench.optim import known_optimizers

    known = known_optimizers()
    if not isinstance(data, dict):
        raise SpaceError(f"search space {origin}: expected a mapping with keys {', '.join(SPACE_KEYS)}")
    unknown = sorted(set(data) - set(SPACE_KEYS))
    if unknown:
        raise SpaceError(f"search space {origin}: unknown key(s) {unknown}; allowed keys: {', '.join(SPACE_KEYS)}")
    space = {"name": str(data.get("name") or Path(origin).stem), "description": str(data.get("description", "")),
             "groups": {}, "run": {}, "pruner": {}}
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise SpaceError(f"search space {origin}: 'groups' must map group names (or \"*\") to {{opt, lr}}")
    for g, spec in groups.items():
        where = f"{origin}: groups.{g}"
        if not isinstance(spec, dict) or sorted(spec) != ["lr", "opt"]:
            raise SpaceError(f"{where}: expected exactly the keys opt and lr, got "
                             f"{sorted(spec) if isinstance(spec, dict) else spec!r}")
        opts = _axis(spec["opt"], f"{where}.opt", numeric=False)
        if isinstance(opts, dict):
            raise SpaceError(f"{where}.opt: expected a list of optimizer names, got a range")
        for i, name in enumerate(opts):
            if str(name).lower() not in known:
                raise SpaceError(f"{where}.opt[{i}]: unknown optimizer {name!r}; known optimizers: "
                                 f"{', '.join(sorted(known))}")
        space["groups"][str(g)] = {"opt": [str(o).lower() for o in opts],
                                   "lr": _axis(spec["lr"], f"{where}.lr", numeric=True, positive=True)}
    run = data.get("run") or {}
    if not isinstance(run, dict):
        raise SpaceError(f"search space {origin}: 'run' must map run settings to lists or ranges")
    for key, spec in run.items():
        where = f"{origin}: run.{key}"
        if key not in RUN_FIELDS and not (key.startswith("model_options.") and len(key) > 14):
            raise SpaceError(f"{where}: unknown run setting {key!r}; allowed: {', '.join(RUN_FIELDS)}, "
                             f"model_options.KEY")
        numeric = key not in ("scale", "params") and not key.startswith("model_options.")
        space["run"][key] = _axis(spec, where, numeric=numeric)
    if "n_hidden" in space["run"] and "params" in space["run"]:
        raise SpaceError(f"search space {origin}: run.n_hidden and run.params both choose the hidden size; keep one")
    pruner = data.get("pruner") or {}
    if not isinstance(pruner, dict) or sorted(set(pruner) - set(PRUNER_KEYS)):
        raise SpaceError(f"search space {origin}: 'pruner' allows the keys {', '.join(PRUNER_KEYS)}; got "
                         f"{sorted(pruner) if isinstance(pruner, dict) else pruner!r}")
    for key, value in pruner.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpaceError(f"{origin}: pruner.{key} must be a non-negative integer, got {value!r}")
    space["pruner"] = dict(pruner)
    if not space["groups"] and not space["run"]:
        raise SpaceError(f"search space {origin}: it has no axes (give 'groups' and/or 'run')")
    return space


def space_for_model(space: dict, model: str) -> dict:
    """Expand ``"*"`` to every group of ``model``; a named group the model lacks is an error.

    The error is deliberate: a space that names groups (``appendix-a3`` names A and D) is an
    experiment about those groups, and silently gridding fewer of them would be another one.
    """
    from bench.models import get_model_class

    model_groups = get_model_class(model).groups
    named = {g: s for g, s in space["groups"].items() if g != "*"}
    missing = [g for g in named if g not in model_groups]
    if missing:
        fits = ", ".join(fitting_spaces(model_groups)) or "none"
        raise SpaceError(f"search space {space['name']!r} names parameter group{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}, but model {model} has the groups {', '.join(model_groups)}; "
                         f"built-in spaces that fit {model}: {fits} (or write a YAML naming its groups, docs/sweeps.md)")
    # "*" skips groups whose update is part of the model (fcurnn's unitary W keeps its Cayley step)
    manifold = getattr(get_model_class(model), "manifold_groups", {})
    groups = {g: named.get(g, None if g in manifold else space["groups"].get("*")) for g in model_groups}
    return {**space, "groups": {g: s for g, s in groups.items() if s is not None}}


def fitting_spaces(model_groups) -> list[str]:
    """The built-in spaces whose named groups all exist in ``model_groups``."""
    fits = []
    for name in builtin_spaces():
        try:
            named = set(load_space(name)["groups"]) - {"*"}
        except SpaceError:
            continue
        if named <= set(model_groups):
            fits.append(name)
    return fits


def _fixed_text(fixed: dict) -> str:
    from bench.optim import format_spec

    return ", ".join(f"{g}={format_spec(spec)}" for g, spec in fixed.items())


def fixed_groups(space: dict, resolved) -> dict:
    """The groups a space leaves alone, with the optimizer each trial keeps for them (from
    ``--opt``, the paper's row or the model's default, as resolve() chose)."""
    return {g: list(v) for g, v in resolved.opts.items() if g not in space["groups"]}


def _is_range(spec) -> bool:
    return isinstance(spec, dict)


def grid_axes(space: dict, sampler: str) -> list[tuple[str, list]]:
    """(trial parameter name, values) per axis, in a fixed order. Grid names are flat."""
    axes = []
    for g, s in space["groups"].items():
        axes.append((f"{g}.opt", s["opt"]))
        axes.append((f"{g}.lr", s["lr"]))
    axes += list(space["run"].items())
    if sampler == "grid":
        for name, values in axes:
            if _is_range(values):
                raise SpaceError(f"search space {space['name']!r}: axis {name} is a range; the grid sampler needs "
                                 f"a list of values (use --sampler tpe for ranges)")
    return axes


def grid_points(space: dict) -> list[dict]:
    axes = grid_axes(space, "grid")
    names = [n for n, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*[v for _, v in axes])]


def grid_size(space: dict) -> int:
    return math.prod(len(v) for _, v in grid_axes(space, "grid"))


def _suggest(trial, name: str, spec):
    if not _is_range(spec):
        return trial.suggest_categorical(name, spec)
    low, high, log, step = spec["low"], spec["high"], spec["log"], spec.get("step")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step or 1)):
        return trial.suggest_int(name, low, high, step=step or 1, log=log)
    return trial.suggest_float(name, float(low), float(high), step=step, log=log)


def apply_overrides(base, values: dict, space: dict):
    """A copy of the base RunConfig with one point of the space applied."""
    from bench.config import parse_count

    cfg = copy.deepcopy(base)
    cfg.opts = {g: list(v) for g, v in cfg.opts.items()}
    for g in space["groups"]:
        opt = values[f"{g}.opt"]
        lr = values[f"{g}.lr"] if f"{g}.lr" in values else values[f"{g}.{opt}.lr"]
        cfg.opts[g] = [opt, float(lr)]
    for key in space["run"]:
        value = values[key]
        if key.startswith("model_options."):
            cfg.model_options = {**cfg.model_options, key.split(".", 1)[1]: value}
        elif key == "params":
            cfg.params = parse_count(value)
            cfg.n_hidden = None          # otherwise a --hidden in the base would win silently
        else:
            setattr(cfg, key, value)
    return cfg


def sample_point(trial, space: dict, sampler: str) -> dict:
    """Ask the trial for one point. TPE learning rates are conditional on the optimizer."""
    values = {}
    for g, s in space["groups"].items():
        opt = values[f"{g}.opt"] = trial.suggest_categorical(f"{g}.opt", s["opt"])
        name = f"{g}.lr" if sampler == "grid" else f"{g}.{opt}.lr"
        values[name] = _suggest(trial, name, s["lr"])
    for key, spec in space["run"].items():
        values[key] = _suggest(trial, key, spec)
    return values


# ---------------------------------------------------------------------------------------------
# Storage, locks and worker identity
# ---------------------------------------------------------------------------------------------
@dataclass
class StorageSpec:
    kind: str          # "journal" or "rdb"
    url: str           # the journal path, or the database URL
    display: str       # for messages (password hidden)

    @property
    def lock_path(self) -> Path | None:
        if self.kind == "journal":
            return Path(self.url + ".bench-lock")
        if self.url.startswith("sqlite:///") and ":memory:" not in self.url:
            return Path(self.url[len("sqlite:///"):] + ".bench-lock")
        return None


def parse_storage(url: str | None, runs_dir: str, study: str) -> StorageSpec:
    if not url:
        path = Path(runs_dir) / "sweeps" / f"{study}.journal"
        return StorageSpec("journal", str(path), str(path))
    if "://" not in url:
        if _DB_TYPO.match(url):
            raise StorageError(f"storage {mask_text(url)!r} looks like a database URL with a typo (expected "
                               f"SCHEME://USER@HOST/DB, e.g. postgresql://user@host/db); a journal file path "
                               f"must not start with a database scheme")
        return StorageSpec("journal", url, url)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file":
        path = url[len("file://"):]
        return StorageSpec("journal", path, path)
    if scheme in ("postgres", "postgresql"):
        url, scheme = _pg_driver() + url[len(scheme):], _pg_driver()
    if scheme not in ("postgresql+psycopg2", "postgresql+psycopg", "sqlite"):
        raise StorageError(f"unsupported storage URL {mask_text(url)!r} (scheme {scheme!r}); use a journal file path "
                           f"(e.g. runs/sweeps/my-study.journal), postgresql://USER@HOST[:PORT]/DB or sqlite:///FILE.db")
    try:
        from sqlalchemy.engine import make_url

        make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise StorageError(f"malformed storage URL {mask_text(url)!r}: {exc}") from None
    return StorageSpec("rdb", url, mask_text(url))


# "postgresql//host/db", "postgres:/host/db", "sqlite:db": each would silently become a local
# journal file, and every node would run its own full grid
_DB_TYPO = re.compile(r"^(postgres(ql)?|sqlite|mysql|mariadb)(\+\w+)?[:/]", re.I)


def _pg_driver() -> str:
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; psycopg2-binary is what we install.
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    return "postgresql+psycopg"


def open_storage(spec: StorageSpec, heartbeat: int | None = None, *, create: bool = True):
    """The Optuna storage object; clear StorageError for anything that cannot be opened."""
    import optuna

    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(spec.url)
        if not create and not path.exists():
            raise SweepError(f"no sweep journal at {path}; pass the sweep's --storage (or its --runs-dir)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"cannot open journal storage {path}: {exc.strerror or exc}") from None
    kwargs = {}
    if spec.url.startswith("postgresql"):
        # one persistent connection per worker (the default pool keeps up to 5); Optuna nests a
        # second session now and then, and the heartbeat thread may overlap the main one, so one
        # overflow connection may open for a moment. The study lock adds one only while a worker
        # holds it (study_lock). For hundreds of workers put pgbouncer (transaction pooling) in
        # front of the server.
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True,
                                   "pool_size": 1, "max_overflow": 1, "pool_timeout": 60}
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                          max_retry=DEFAULT_MAX_RETRY))
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(3):
        try:
            return reconnecting_storage_class()(spec.url, **kwargs)
        except (IntegrityError, ProgrammingError):
            if attempt == 2:     # workers starting together may race to create the tables
                raise
            time.sleep(0.5 + attempt)
        except ImportError as exc:
            raise StorageError(f"cannot open storage {spec.display}: missing database driver ({exc})") from None
        except (OperationalError, ValueError) as exc:   # unreachable server, bad credentials, bad options
            lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise StorageError(f"cannot open storage {spec.display}: {lines[0] if lines else type(exc).__name__}") \
                from None


def _connection_lost(exc: BaseException) -> bool:
    """A dropped or refused database connection (server restart, fail-over, a proxy's idle cut),
    as opposed to an error in the statement itself."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return isinstance(cause, (OperationalError, InterfaceError)) or \
        (isinstance(cause, DBAPIError) and cause.connection_invalidated)


# A lost connection is retried for about this long (a restarting server or a fail-over).
RECONNECT_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


def _reconnecting(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        for delay in (*RECONNECT_DELAYS, None):
            try:
                return method(self, *args, **kwargs)
            except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
                if delay is None or not _connection_lost(exc):
                    raise
                print(f"bench sweep: database connection lost in {method.__name__} "
                      f"({type(exc.__cause__ or exc).__name__}); retrying in {delay} s", file=sys.stderr, flush=True)
                time.sleep(delay)
    return call


@functools.lru_cache(maxsize=None)
def reconnecting_storage_class():
    """Optuna's RDBStorage whose every public call is retried when the database connection was
    lost mid-call: the pool's pre-ping only replaces connections that died while idle, and
    Optuna turns a connection dropped inside a query into StorageInternalError, which would end
    the worker. A failed transaction was rolled back, so repeating the call is safe; the one
    exception (the server committed, then the connection dropped before the reply) leaves at
    worst a claimed trial without owner, which the reaper re-queues."""
    import optuna

    base = optuna.storages.RDBStorage
    names = [n for n, v in vars(base).items() if callable(v) and not n.startswith("_")
             and n not in ("remove_session", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback")]
    return type("ReconnectingRDBStorage", (base,), {n: _reconnecting(getattr(base, n)) for n in names})


@functools.lru_cache(maxsize=None)
def _lock_engine(url: str):
    """Connections for the study lock only, opened for a try and closed after it (no pool)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})


@contextlib.contextmanager
def study_lock(spec: StorageSpec, storage, name: str):
    """Serialise grid enqueueing, reaping and confirm-seed claims across processes and nodes."""
    if spec.kind == "rdb" and spec.url.startswith("postgresql"):
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha256(f"bench-sweep:{name}".encode()).digest()[:8], "big", signed=True)
        # A waiter polls with a connection it closes between tries instead of blocking on one:
        # otherwise every worker starting together holds a second connection while it waits.
        from sqlalchemy.exc import OperationalError

        engine = _lock_engine(spec.url)
        lost_since = None
        while True:
            try:
                conn = engine.connect()
                got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            except OperationalError as exc:     # the server restarts or fails over: wait for it a while
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > sum(RECONNECT_DELAYS):
                    raise StorageError(f"lost the database {spec.display}: {str(exc.orig or exc).strip()}") \
                        from None
                time.sleep(1)
                continue
            lost_since = None
            with conn:
                if got:
                    try:
                        yield
                    finally:
                        # a dropped connection has released the lock already
                        with contextlib.suppress(OperationalError):
                            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                            conn.commit()
                    return
                conn.rollback()
            time.sleep(0.05 + 0.2 * random.random())
        return
    path = spec.lock_path
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot), to tell a live worker from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if fields[0] != "Z" else None   # field 3 is the state; Z = zombie = dead


def owner() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot": _boot_id(), "pstart": _proc_start(pid)}


def owner_dead(info: dict) -> bool:
    """True only when we *know* the process is gone: same host, and rebooted or no such process."""
    if not info or info.get("host") != socket.gethostname() or "pid" not in info:
        return False
    if info.get("boot") and _boot_id() and info["boot"] != _boot_id():
        return True
    if Path("/proc").is_dir():
        start = _proc_start(int(info["pid"]))
        return start is None or (info.get("pstart") is not None and start != info["pstart"])
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _Heartbeat:
    """Records the trial's heartbeat (RDB storage only) while the run trains."""

    def __init__(self, storage, trial_id: int, interval: int | None):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = None

    def _beat(self):
        with contextlib.suppress(Exception):   # a DB hiccup must not kill the run
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self):
        if self.interval:
            self._beat()
            self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-heartbeat")
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._beat()

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# The sweep context: everything a worker needs, rebuilt from the CLI args in every process
# ---------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    name: str
    storage_spec: StorageSpec
    space: dict
    sampler: str
    base: object                  # RunConfig (unresolved): the fixed part of every trial
    metric: str
    direction: str
    prune: bool
    n_trials: int | None
    heartbeat: int
    confirm_seeds: int = 0
    wait: bool = False            # stay while any trial runs anywhere (it may fail and come back)
    sampler_seed: int | None = None
    storage: object = None
    meta: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def pruner(self):
        import optuna

        if not self.prune:
            return optuna.pruners.NopPruner()
        from bench.config import resolve

        p = self.space["pruner"]
        max_steps = resolve(copy.deepcopy(self.base)).max_steps or 0
        # Early validations of memory tasks sit at the baseline for every config: warm up first.
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 5),
                                           n_warmup_steps=p.get("n_warmup_steps", max_steps // 4),
                                           interval_steps=p.get("interval_steps", 1))

    def sampler_obj(self):
        import optuna

        if self.sampler == "tpe":
            # one seed per worker (the same seed everywhere would propose the same first points)
            seed = None if self.sampler_seed is None else self.sampler_seed + worker_index()
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed)
        return optuna.samplers.RandomSampler()   # never asked: grid trials all come from the queue

    def load(self):
        import optuna

        return optuna.load_study(study_name=self.name, storage=self.storage, sampler=self.sampler_obj(),
                                 pruner=self.pruner())

    def lock(self):
        return study_lock(self.storage_spec, self.storage, self.name)


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")


def build_sweep(args, *, check: bool = True, open_store: bool = True) -> Sweep:
    """Validate everything the CLI gave before any work starts."""
    from bench.cmd_run import config_from_args
    from bench.config import resolve
    from bench.tasks import get_task_class

    _quiet_optuna()
    if not args.model or not args.task:
        raise SweepError("bench sweep needs --model and --task (or the action 'status' / 'best' with --study)")
    if args.sampler not in SAMPLERS:
        raise SweepError(f"unknown sampler {args.sampler!r}; known samplers: {', '.join(SAMPLERS)}")
    space = space_for_model(load_space(args.space), args.model)
    grid_axes(space, args.sampler)      # rejects ranges for the grid
    if args.sampler == "grid" and args.n_trials is not None:
        raise SweepError(f"--n-trials is for --sampler tpe; the grid runs each of its {grid_size(space)} "
                         f"combinations once")
    base = config_from_args(args)
    base.quiet = True                   # trials print one line each, not progress bars
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
        fixed = fixed_groups(space, resolve(copy.deepcopy(base)))
        _check_run_axes(sweep)
    sweep.meta = {"model": base.model, "task": base.task, "space": space["name"], "space_def": space,
                  "fixed_groups": fixed,
                  "sampler": sweep.sampler, "base": base.group_key(), "metric": sweep.metric,
                  "direction": sweep.direction, "grid_size": grid_size(space) if sweep.sampler == "grid" else None,
                  "n_trials": sweep.n_trials, "runs_dir": str(Path(base.runs_dir).resolve())}
    if open_store:
        sweep.storage = open_storage(sweep.storage_spec, sweep.heartbeat if sweep.storage_spec.kind == "rdb" else None)
    return sweep


def _check_run_axes(sweep: Sweep) -> None:
    """Resolve the base with every listed value of the run axes and every optimizer of each
    group, so a bad value (say an optimizer a manifold group refuses) fails now, not mid-sweep."""
    from bench.config import resolve

    lists = [(k, v) for k, v in sweep.space["run"].items() if not _is_range(v)]
    first = {f"{g}.opt": s["opt"][0] for g, s in sweep.space["groups"].items()}
    first.update({f"{g}.lr": (s["lr"][0] if not _is_range(s["lr"]) else s["lr"]["low"])
                  for g, s in sweep.space["groups"].items()})
    first.update({k: (v["low"] if _is_range(v) else v[0]) for k, v in sweep.space["run"].items()})

    def check(point: dict, shown: list[str]) -> None:
        try:
            resolve(apply_overrides(sweep.base, point, sweep.space))
        except BenchError as exc:
            text = ", ".join(f"{k}={point[k]!r}" for k in shown)
            raise SpaceError(f"search space {sweep.space['name']!r}: the point {text} is not a valid run: {exc}") \
                from None

    for combo in itertools.islice(itertools.product(*[v for _, v in lists]), 1000):
        check({**first, **dict(zip([k for k, _ in lists], combo))}, [k for k, _ in lists])
    for g, s in sweep.space["groups"].items():
        for opt in s["opt"][1:]:
            check({**first, f"{g}.opt": opt}, [f"{g}.opt"])


def _json(x):
    return json.loads(json.dumps(x, default=str))


def prepare(sweep: Sweep):
    """Create or join the study (checking it is the same sweep) and enqueue the missing grid points."""
    import optuna

    with sweep.lock():
        try:
            study = optuna.create_study(study_name=sweep.name, storage=sweep.storage, direction=sweep.direction,
                                        sampler=sweep.sampler_obj(), pruner=sweep.pruner())
            study.set_user_attr("bench", _json(sweep.meta))
        except optuna.exceptions.DuplicatedStudyError:
            study = sweep.load()
            _check_same_sweep(sweep, study)
            meta = study.user_attrs["bench"]
            if meta.get("n_trials") != sweep.n_trials:    # a larger --n-trials extends a TPE study
                study.set_user_attr("bench", {**meta, "n_trials": sweep.n_trials})
        if sweep.sampler == "grid":
            seen = {_point_key(t.system_attrs.get("fixed_params") or t.params) for t in study.get_trials(deepcopy=False)}
            for point in grid_points(sweep.space):
                if _point_key(point) not in seen:
                    study.enqueue_trial(point)
    return study


def _point_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _check_same_sweep(sweep: Sweep, study) -> None:
    old = study.user_attrs.get("bench")
    if old is None and not study.trials:    # created by a process that died before labelling it
        study.set_user_attr("bench", _json(sweep.meta))
        return
    if old is None:
        raise SweepError(f"study {sweep.name!r} in {sweep.storage_spec.display} was not made by bench sweep; "
                         f"choose another --study")
    new = _json(sweep.meta)
    keys = ("model", "task", "space_def", "sampler", "base", "metric", "direction")
    diff = [k for k in keys if old.get(k) != new.get(k)]
    if diff:
        details = [f"{k}: study has {old.get(k)!r}, you asked for {new.get(k)!r}" for k in diff
                   if k not in ("space_def", "base")]
        if "base" in diff:
            ob, nb = old.get("base") or {}, new.get("base") or {}
            details += [f"{k}: study has {ob.get(k)!r}, you asked for {nb.get(k)!r}"
                        for k in sorted(set(ob) | set(nb)) if ob.get(k) != nb.get(k)]
        detail = "; ".join(details)
        raise SweepError(f"study {sweep.name!r} already exists with different settings ({', '.join(diff)}"
                         f"{'; ' + detail if detail else ''}); re-run it with its original flags or choose "
                         f"another --study")


# ---------------------------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------------------------
def _trial_callback_class():
    import lightning.pytorch as pl
    import optuna

    class TrialCallback(pl.Callback):
        """Links the trial to its run folder and reports ``val/<metric>`` for pruning.

        optuna_integration's PyTorchLightningPruningCallback reports at ``current_epoch``; our runs
        validate every ``val_every`` steps inside one long epoch, so all its reports after the
        first are dropped as duplicates of step 0. This reports at ``global_step`` instead.
        """

        def __init__(self, trial, monitor: str):
            self.trial, self.monitor, self.run_dir = trial, monitor, None

        def on_fit_start(self, trainer, pl_module):
            self.run_dir = str(Path(trainer.default_root_dir).resolve())
            with _taken_over_check():
                self.trial.set_user_attr("run_dir", self.run_dir)

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            score = trainer.callback_metrics.get(self.monitor)
            if score is None:
                return
            step = int(trainer.global_step)
            with _taken_over_check():
                self.trial.report(float(score), step=step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} ({self.monitor} = {float(score):.4g})")

    return TrialCallback


@contextlib.contextmanager
def _taken_over_check():
    import optuna

    try:
        yield
    except optuna.exceptions.UpdateFinishedTrialError:
        raise TrialTakenOver from None


def _config_record(cfg) -> dict:
    return _json(cfg.to_dict())


def _resume_from(ua: dict) -> str | None:
    """A run folder this trial may continue in: one its own worker left on purpose (Ctrl-C,
    SIGTERM preemption), or one whose worker is known dead. Never the folder of a worker that
    may still be alive (a too-short heartbeat): two runs would write into one folder."""
    from bench.run import resume_checkpoint

    dead = owner_dead(ua.get("owner"))
    for folder in (ua.get("resume_dir"), ua.get("run_dir") if dead else None):
        if folder and not (Path(folder) / "result.json").exists() and resume_checkpoint(Path(folder)):
            return folder
    return None


def _requeue(study, trial, outcome: str, desc: str, started: float, retried_from, run_dir,
             error: str | None = None, attempt: int = 0) -> None:
    """FAIL this trial and queue the same parameters again (the sweep resumes with them).
    ``attempt`` counts the point's own failures (interruptions and unfit nodes do not count)."""
    from optuna.trial import TrialState

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)     # let the bookkeeping finish
    try:
        _finish(study, trial, TrialState.FAIL, outcome, error or f"{outcome}; re-queued", desc, started)
        attrs = {"retried_from": retried_from if retried_from is not None else trial.number}
        if attempt:
            attrs["attempt"] = attempt
        if run_dir:
            attrs["resume_dir"] = run_dir
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    finally:
        signal.signal(signal.SIGINT, old)


def run_trial(sweep: Sweep, study, trial) -> str:
    """Run one trial through bench.run.run and tell the study; returns the outcome."""
    import optuna
    from optuna.trial import TrialState

    from bench.config import resolve
    from bench.run import run

    ua = trial.user_attrs
    retried_from = ua.get("retried_from", ua.get("number"))   # a retry inherits the failed trial's attrs
    resume = _resume_from(ua)
    trial.set_user_attr("number", trial.number)
    trial.set_user_attr("owner", owner())
    if retried_from is not None:
        trial.set_user_attr("retried_from", retried_from)
    for stale in ("run_dir", "result", "outcome", "error", "resume_dir"):
        if stale in ua:
            trial.set_user_attr(stale, None)
    started = time.time()
    point = sample_point(trial, sweep.space, sweep.sampler)
    desc = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
    try:
        cfg = resolve(apply_overrides(sweep.base, point, sweep.space))
    except BenchError as exc:
        return _finish(study, trial, TrialState.FAIL, "invalid", str(exc), desc, started)
    cfg.tags = {"study": sweep.name, "trial": trial.number, "choices": _json(point),
                **({"retried_from": retried_from} if retried_from is not None else {})}
    trial.set_user_attr("config", _config_record(cfg))
    trial_id = sweep.storage.get_trial_id_from_study_id_trial_number(
        sweep.storage.get_study_id_from_name(sweep.name), trial.number)
    callback = _trial_callback_class()(trial, f"val/{sweep.metric}")
    try:
        with _Heartbeat(sweep.storage, trial_id, sweep.heartbeat if sweep.storage_spec.kind == "rdb" else None):
            try:
                result = run(cfg, callbacks=[callback], **({"resume_dir": resume} if resume else {}))
            except Exception as exc:
                if not resume or isinstance(exc, (optuna.TrialPruned, BenchError)):
                    raise
                # e.g. a checkpoint cut short by SIGKILL: train this trial afresh instead
                print(f"[{sweep.label}] trial {trial.number}: cannot resume in {resume} ({exc}); starting afresh",
                      flush=True)
                result = run(cfg, callbacks=[callback])
    except optuna.TrialPruned as exc:
        return _finish(study, trial, TrialState.PRUNED, "pruned", str(exc), desc, started)
    except TrialTakenOver:
        return _drop_taken_over(sweep, trial, desc, started, callback.run_dir)
    except (KeyboardInterrupt, SystemExit) as exc:
        # The run folder keeps its last (or preemption) checkpoint; the retry continues there.
        _requeue(study, trial, "interrupted", desc, started, retried_from, callback.run_dir,
                 attempt=ua.get("attempt", 0))
        if isinstance(exc, SystemExit) and exc.code not in (None, 0, 1):
            # submitit's time-out/preemption handler: it has requeued the job and exits with its
            # own code, which must reach submitit unchanged (Lightning turns Ctrl-C into exit 1)
            raise
        raise KeyboardInterrupt from None
    except BenchError as exc:
        # run() raises input errors only before training: this node's runs dir or data. The point
        # is fine: give it back untouched and stop this worker.
        _requeue(study, trial, "worker-unfit", desc, started, retried_from, None,
                 error=f"{exc}; re-queued for another worker", attempt=ua.get("attempt", 0))
        raise WorkerUnfit(f"this worker cannot run trials: {exc}; trial {trial.number} went back to the queue") \
            from None
    except Exception as exc:
        attempt = ua.get("attempt", 0) + 1
        error = f"{type(exc).__name__}: {exc}"
        if attempt <= MAX_TRIAL_RETRIES:
            _requeue(study, trial, "error", desc, started, retried_from, None,
                     error=f"{error} (attempt {attempt} of {MAX_TRIAL_RETRIES + 1}; re-queued)", attempt=attempt)
            return "error"
        return _finish(study, trial, TrialState.FAIL, "error",
                       f"{error} (attempt {attempt} of {MAX_TRIAL_RETRIES + 1}; `bench sweep retry` re-queues it)",
                       desc, started)
    if result["status"] in ("preempted", "interrupted"):
        # SIGTERM (cluster preemption) or Ctrl-C: run() checkpointed; the retry continues from there
        _requeue(study, trial, result["status"], desc, started, retried_from, result.get("run_dir"))
        raise KeyboardInterrupt
    trial.set_user_attr("result", str(Path(result["run_dir"]).resolve() / "result.json"))
    if result["status"] != "completed":
        return _finish(study, trial, TrialState.FAIL, result["status"], result.get("error"), desc, started)
    value = result["metrics"].get(f"best_val_{sweep.metric}")
    if value is None or not math.isfinite(value):
        return _finish(study, trial, TrialState.FAIL, "no-metric", f"no finite best_val_{sweep.metric}", desc,
                       started)
    return _finish(study, trial, TrialState.COMPLETE, "complete", None, desc, started, value)


def _drop_taken_over(sweep: Sweep, trial, desc: str, started: float, run_dir: str | None) -> str:
    """A woken stalled worker: its trial was failed by the heartbeat and re-run elsewhere. Drop it
    and the half-trained folder it was writing (nothing else refers to it)."""
    if run_dir and Path(run_dir).is_dir() and not (Path(run_dir) / "result.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[{sweep.label}] trial {trial.number} {desc} -> dropped: the study re-ran it while this worker was "
          f"stalled ({time.time() - started:.1f} s)", flush=True)
    return "taken-over"


def _finish(study, trial, state, outcome: str, error, desc: str, started: float, value=None) -> str:
    import optuna

    try:
        trial.set_user_attr("outcome", outcome)
        if error:
            trial.set_user_attr("error", str(error)[:2000])
        study.tell(trial, value if state.name == "COMPLETE" else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # its heartbeat went stale while it ran (an overloaded node?): it was FAILED and re-queued
        outcome = f"{outcome}, not recorded: the trial was already failed by its heartbeat"
    shown = f" {value:.4g}" if value is not None else ""
    why = f": {str(error).splitlines()[0][:160]}" if error and outcome not in ("complete",) else ""
    print(f"[{socket.gethostname()}:{os.getpid()}] trial {trial.number} {desc} -> {outcome}{shown} "
          f"({time.time() - started:.1f} s){why}", flush=True)
    return outcome


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


def reap_unclaimed(sweep: Sweep, study) -> int:
    """FAIL and re-queue RUNNING trials that never got an owner: their worker died between taking
    the trial and recording itself (no heartbeat either), so nothing else would ever reap them.
    A live worker records its owner within milliseconds; the grace is twice the heartbeat."""
    import datetime

    grace = datetime.timedelta(seconds=2 * sweep.heartbeat)
    now = datetime.datetime.now()
    return _reap(sweep, study,
                 lambda t: not t.user_attrs.get("owner") and t.datetime_start and now - t.datetime_start > grace,
                 lambda t: "taken but never claimed by a worker")


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
    can be written and the task's data is there and valid. Raises WorkerUnfit; takes nothing."""
    import tempfile

    from bench.config import resolve
    from bench.tasks import build_task

    cfg = resolve(copy.deepcopy(sweep.base))
    base = Path(cfg.runs_dir) / cfg.task / cfg.model
    try:
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=base, prefix=".probe-"):
            pass
    except OSError as exc:
        raise WorkerUnfit(f"this worker cannot write its runs directory {base}: {exc.strerror or exc}; "
                          f"no trial was taken (choose another --runs-dir)") from None
    try:
        build_task(cfg.task, seq_len=cfg.seq_len, data_dir=cfg.data_dir, data_seed=cfg.data_seed) \
            .datamodule(cfg.batch_size)
    except BenchError as exc:
        raise WorkerUnfit(f"this worker cannot load the task's data: {exc}; no trial was taken") from None


def worker_index() -> int:
    """This worker's number: the SLURM array index, else the local worker number (0 for the
    first process), for per-worker seeds."""
    for var in ("SLURM_ARRAY_TASK_ID", "BENCH_WORKER_INDEX"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


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
        reap_unclaimed(sweep, study)
        # Pop only WAITING trials: study.ask() would fall through to the sampler when the queue is
        # empty, which for the grid would run a point outside the grid.
        trial_id = study._pop_waiting_trial_id()
        trial = optuna.Trial(study, trial_id) if trial_id is not None else None
        if trial is None and sweep.sampler == "tpe" and _budget_left(sweep, study) > 0:
            trial = study.ask()
        if trial is None:
            if _may_come_back(sweep, study):
                time.sleep(poll)
                continue
            return ran
        run_trial(sweep, study, trial)
        ran += 1


def _set_threads(workers: int) -> None:
    # Several workers on few cores: oversubscribed torch threads made a tiny run 10x slower here.
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    elif workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker_main(arg_dict: dict, index: int = 0) -> None:
    """Entry point of a spawned local worker process."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)    # kill -TERM = Ctrl-C: re-queue the trial
    os.environ["BENCH_WORKER_INDEX"] = str(index)
    args = argparse.Namespace(**arg_dict)
    try:
        _set_threads(args.workers)
        work(build_sweep(args, check=False))
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(sweep: Sweep, args) -> None:
    """This process is worker 1; ``--workers K`` spawns K-1 more (fresh interpreters)."""
    _set_threads(args.workers)
    if args.workers == 1:
        work(sweep)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    arg_dict = {k: v for k, v in vars(args).items() if k != "func"}
    procs = [ctx.Process(target=_worker_main, args=(arg_dict, i), name=f"bench-sweep-{i}")
             for i in range(1, args.workers)]
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for p in procs:
            p.start()
        print(f"bench sweep: {args.workers} workers: this process ({os.getpid()}) and "
              f"{', '.join(str(p.pid) for p in procs)}", flush=True)
        work(sweep)
        for p in procs:
            p.join()
            if p.exitcode:
                print(f"bench sweep: worker pid {p.pid} exited with code {p.exitcode}", flush=True)
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
    if any(p.exitcode for p in procs):
        work(sweep)   # a worker died after this one finished: reap its trial and finish what is left


# ---------------------------------------------------------------------------------------------
# Confirm seeds, status, best
# ---------------------------------------------------------------------------------------------
def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:
        return None


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
    best = _best_trial(study)
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


def confirm_records(study, number: int) -> list[dict]:
    prefix = f"confirm:{number}:"
    return [v for k, v in sorted(study.user_attrs.items()) if k.startswith(prefix)]


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4g} (n = 1)" if values else "-"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g} (n = {len(values)})"


def best_command(config: dict) -> str:
    """A ``bench run`` command line that reproduces a resolved config exactly (same config hash)."""
    from bench.optim import format_spec

    c = config
    argv = ["bench", "run", "--model", c["model"], "--task", c["task"], "--seed", str(c["seed"]),
            "--hidden", str(c["n_hidden"])]
    if c.get("params") is not None:
        argv += ["--params", str(c["params"])]
    for flag, key in (("--seq-len", "seq_len"), ("--batch-size", "batch_size"), ("--max-steps", "max_steps"),
                      ("--max-epochs", "max_epochs"), ("--val-every", "val_every"), ("--grad-clip", "grad_clip")):
        if c.get(key) is not None:
            argv += [flag, repr(c[key]) if isinstance(c[key], float) else str(c[key])]
    for group, spec in c["opts"].items():
        argv += ["--opt", f"{group}={format_spec(spec)}"]
    argv += ["--scale", c["scale"], "--data-seed", str(c["data_seed"])]
    if c.get("data_dir"):
        argv += ["--data-dir", c["data_dir"]]
    for key, value in sorted((c.get("model_options") or {}).items()):
        argv += ["--model-opt", f"{key}={json.dumps(value)}"]
    if c.get("device", "auto") != "auto":
        argv += ["--device", c["device"]]
    if c.get("runs_dir", "runs") != "runs":
        argv += ["--runs-dir", c["runs_dir"]]
    return shlex.join(argv)


def _open_existing(args):
    import optuna

    _quiet_optuna()
    if not args.study:
        raise SweepError(f"bench sweep {args.action} needs --study NAME")
    spec = parse_storage(args.storage, args.runs_dir, args.study)
    storage = open_storage(spec, create=False)
    try:
        return optuna.load_study(study_name=args.study, storage=storage), spec
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise SweepError(f"no study {args.study!r} in {spec.display}; studies there: "
                         f"{', '.join(names) if names else 'none'}") from None


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def cmd_status(args) -> int:
    from optuna.trial import TrialState

    study, spec = _open_existing(args)
    meta = study.user_attrs.get("bench", {})
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    metric = meta.get("metric", "value")
    print(f"study {study.study_name} ({spec.display})")
    if meta:
        size = f", {meta['grid_size']} combinations" if meta.get("grid_size") else f", {meta.get('n_trials')} trials"
        print(f"  {meta['model']} on {meta['task']}, space {meta['space']}, sampler {meta['sampler']}{size}; "
              f"{meta['direction']} val {metric}")
        if meta.get("fixed_groups"):
            print("  fixed in every trial: " + _fixed_text(meta["fixed_groups"]))
    print("  trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) if trials else "  trials: none")
    best = _best_trial(study)
    if best is not None:
        print(f"  best: trial {best.number}, val {metric} {best.value:.4g}: {_fmt_params(best.params)}")
        conf = [r for r in confirm_records(study, best.number) if r.get("value") is not None]
        if conf:
            print(f"  best over seeds: {_mean_std([best.value] + [r['value'] for r in conf])}")
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        print("  running:")
        now = time.time()
        for t in running:
            o = t.user_attrs.get("owner") or {}
            age = now - t.datetime_start.timestamp() if t.datetime_start else 0
            last = ""
            if t.intermediate_values:
                step = max(t.intermediate_values)
                last = f", last val {metric} {t.intermediate_values[step]:.4g} at step {step}"
            print(f"    trial {t.number} on {o.get('host', '?')}:{o.get('pid', '?')}, {age / 60:.1f} min{last}: "
                  f"{_fmt_params(t.params)}")
    for t in [t for t in trials if t.state == TrialState.FAIL][-5:]:
        why = t.user_attrs.get("outcome") or "worker died"
        error = (t.user_attrs.get("error") or "").splitlines()
        print(f"  failed: trial {t.number} ({why}){': ' + error[0][:120] if error else ''}")
    return 0


def cmd_best(args) -> int:
    from optuna.trial import TrialState

    study, _ = _open_existing(args)
    best = _best_trial(study)
    if best is None:
        counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
        raise SweepError(f"study {args.study!r} has no completed trial yet ("
                         + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")")
    meta = study.user_attrs.get("bench", {})
    metric = meta.get("metric", "value")
    print(f"# study {study.study_name}: best trial {best.number} of {len(study.trials)}, "
          f"val {metric} {best.value:.6g}")
    print(f"# params: {_fmt_params(best.params)}")
    if best.user_attrs.get("result"):
        print(f"# result: {best.user_attrs['result']}")
    conf = [r for r in confirm_records(study, best.number) if r.get("value") is not None]
    if conf:
        print(f"# over seeds: {_mean_std([best.value] + [r['value'] for r in conf])}")
    print(best_command(best.user_attrs["config"]))
    return 0


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

    study, spec = _open_existing(args)
    by_point: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        by_point.setdefault(_point_key(t.system_attrs.get("fixed_params") or t.params), []).append(t)
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
        print(f"  fixed in every trial: {_fixed_text(fixed)}")
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
    study = prepare(sweep)
    if args.launcher != "local":
        return launch_array(sweep, args)
    size = f"{grid_size(sweep.space)} combinations" if sweep.sampler == "grid" else f"{sweep.n_trials} trials"
    fixed = sweep.meta.get("fixed_groups") or {}
    kept = "; fixed: " + _fixed_text(fixed) if fixed else ""
    print(f"bench sweep: study {sweep.name} ({sweep.storage_spec.display}): {sweep.base.model} on "
          f"{sweep.base.task}, space {sweep.space['name']}, {sweep.sampler} over {size}{kept}, "
          f"{sweep.direction} val {sweep.metric}, {args.workers} worker(s)", flush=True)
    run_workers(sweep, args)
    study = sweep.load()
    confirm_seeds(sweep, study, sweep.confirm_seeds)
    args.study = sweep.name
    cmd_status(args)
    if _best_trial(study) is not None:
        print(f"reproduce the best trial: bench sweep best --study {shlex.quote(sweep.name)}{args.storage_ref}")
    return 0


_LAUNCH_FLAGS = {"--launcher", "--partition", "--gpus-per-worker", "--timeout-min", "--workers", "--slurm-dir",
                 "--account", "--qos", "--mem", "--constraint", "--setup"}


def worker_argv(argv: list[str]) -> list[str]:
    """The command line of one array worker: the submitter's, minus the launcher flags."""
    for flag in _LAUNCH_FLAGS:
        argv = _drop_flag(argv, flag)
    return [a for a in argv if a != "--wait"] + ["--workers", "1"]


def _drop_flag(argv: list[str], flag: str) -> list[str]:
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
def _environment(values: dict):
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
    argv = _drop_flag(_drop_flag(_drop_flag(worker_argv(getattr(args, "argv", None) or sys.argv[1:]), "--storage"),
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
    with _environment(inherited):
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


def register(sub) -> None:
    from bench.cmd_run import _nonneg_int as _nonneg, _positive_int as _pos, add_run_arguments

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
    g.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="local: worker processes here (default); slurm: a SLURM job array through submitit "
                        "(requeued on preemption); submitit-local: the same array as local processes")
    g.add_argument("--partition", help="SLURM partition (--launcher slurm)")
    g.add_argument("--account", help="SLURM account to charge (--launcher slurm)")
    g.add_argument("--qos", help="SLURM quality of service (--launcher slurm)")
    g.add_argument("--mem", help="SLURM memory per worker, e.g. 32G (--launcher slurm)")
    g.add_argument("--constraint", help="SLURM node features, e.g. a100 (--launcher slurm)")
    g.add_argument("--setup", action="append", metavar="LINE",
                   help="shell line run in each job before the worker, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--gpus-per-worker", type=_nonneg, default=0, help="GPUs per array task (default 0)")
    g.add_argument("--timeout-min", type=_pos, default=24 * 60, help="time limit per array task (default 1440)")
    g.add_argument("--slurm-dir", help="submitit job folder, on shared storage (default RUNS_DIR/slurm/STUDY)")
    g.add_argument("--wait", action="store_true",
                   help="with a launcher: wait for the array and print the status; a local worker: stay while any "
                        "trial runs anywhere (default: leave when nothing is left to run here)")
    g.add_argument("--sampler-seed", type=_nonneg, metavar="SEED",
                   help="seed TPE (worker k uses SEED + k; reproducible with one worker)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the study, its size and the first trials; touch no storage and run nothing")
    g.add_argument("--storage", help="journal file path, or postgresql://USER@HOST[:PORT]/DB for several nodes "
                                     "(default: $BENCH_STORAGE, else RUNS_DIR/sweeps/STUDY.journal). Keep passwords "
                                     "off the command line: PGPASSWORD, ~/.pgpass, or --storage-file")
    g.add_argument("--storage-file", metavar="PATH",
                   help="read the storage URL from the first line of PATH (e.g. mode 0600 on shared storage)")
    g.add_argument("--study", help="study name (default MODEL-TASK-SPACE-SAMPLER); same name + storage = same sweep")
    g.add_argument("--confirm-seeds", type=_nonneg, default=0, metavar="K",
                   help="re-run the best config on K more seeds when the study is done")
    g.add_argument("--no-prune", action="store_true", help="never prune (default: median pruner on val metric)")
    g.add_argument("--heartbeat", type=_pos, default=60, metavar="SECONDS",
                   help="heartbeat interval for database storage; a trial silent for 2x this is failed "
                        "and re-run (default 60)")
    p.set_defaults(func=cmd_sweep)

"""Where a study lives (a journal file, or PostgreSQL/SQLite through Optuna's RDBStorage), the
cross-process study lock, and who a worker is (to tell a dead worker's trial from a live one's)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.secrets import mask_text
from bench.sweep.errors import StorageError, SweepError


DEFAULT_MAX_RETRY = 3


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
        # Exactly one connection per worker: the pool holds one, and its overflow of one serves
        # only Optuna's construction (below). The heartbeat thread waits for the connection while
        # the main thread uses it (each storage call holds it for one short transaction), and the
        # study lock is taken on it (study_lock).
        kwargs["engine_kwargs"] = {"connect_args": _pg_connect_args(), "pool_pre_ping": True,
                                   "pool_size": 1, "max_overflow": 1, "pool_timeout": POOL_WAIT}
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                          max_retry=DEFAULT_MAX_RETRY))
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(3):
        try:
            if not spec.url.startswith("postgresql"):
                return reconnecting_storage_class()(spec.url, **kwargs)
            # Optuna's construction takes a second connection inside a first where it checks the
            # tables' version (skipped here, done below on one) and, once in a database's life,
            # where it creates and stamps them; after it, the worker never needs a second one.
            storage = reconnecting_storage_class()(spec.url, skip_compatibility_check=True, **kwargs)
            storage.engine.pool._max_overflow = 0     # QueuePool has no public setter for it
            version, head = storage.get_current_version(), storage.get_head_version()
            if version != head:
                raise StorageError(f"the study database {spec.display} has Optuna's table schema {version}, this "
                                   f"Optuna ({optuna.__version__}) needs {head}: run `optuna storage upgrade "
                                   f"--storage URL` (or use the Optuna that made it)")
            return storage
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
# How long a thread waits for the worker's one connection: longer than a call that is
# reconnecting takes to give up, so that waiting never fails where the call itself would not.
POOL_WAIT = sum(RECONNECT_DELAYS) + 30


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


def _pg_connect_args() -> dict:
    # the application name tells a DBA (pg_stat_activity) which worker holds a connection
    return {"connect_timeout": 10, "application_name": f"bench-sweep {socket.gethostname()}:{os.getpid()}"}


@contextlib.contextmanager
def study_lock(spec: StorageSpec, storage, name: str):
    """Serialise grid enqueueing, reaping and confirm-seed claims across processes and nodes."""
    if spec.kind == "rdb" and spec.url.startswith("postgresql"):
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha256(f"bench-sweep:{name}".encode()).digest()[:8], "big", signed=True)
        # The lock is a session-level advisory lock taken on the worker's one pooled connection
        # (open_storage): it outlives the transaction that took it, and every storage call made
        # while it is held runs on that same connection. A waiter polls rather than blocks, so
        # that the connection stays free for its heartbeat between tries.
        from sqlalchemy.exc import OperationalError

        lost_since = None
        while True:
            try:
                with storage.engine.connect() as conn:
                    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                    conn.commit()
            except OperationalError as exc:     # the server restarts or fails over: wait for it a while
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > sum(RECONNECT_DELAYS):
                    raise StorageError(f"lost the database {spec.display}: {str(exc.orig or exc).strip()}") \
                        from None
                time.sleep(1)
                continue
            if got:
                break
            lost_since = None
            time.sleep(0.05 + 0.2 * random.random())
        try:
            yield
        finally:
            # a dropped connection has released the lock already
            with contextlib.suppress(OperationalError), storage.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
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


class Heartbeat:
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

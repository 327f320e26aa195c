"""The sweep's error types: each reaches the user as one line (exit code 2), never a traceback."""
from __future__ import annotations

from bench.errors import BenchError


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

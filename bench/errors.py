"""Typed input errors of the harness (models, tasks, runs, sweeps): each reaches the user as one
line naming the bad value, exit code 2, never a traceback."""


class BenchError(ValueError):
    """Base class of every input error the harness reports to users."""


class UnknownNameError(BenchError):
    """A model, task, optimizer, group or space name that is not registered."""


class InvalidHiddenSizeError(BenchError):
    """A hidden size (or capacity option) the architecture cannot have."""


class ConfigError(BenchError):
    """A run configuration value that is out of range or malformed."""


class DataError(BenchError):
    """Missing, corrupt or mislabelled data files."""

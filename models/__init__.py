"""Model registry: importing this package registers every architecture module."""
from .base import MODELS, RecurrentModel, build_model, get_model_class  # noqa: F401
from .errors import BenchError, ConfigError, DataError, InvalidHiddenSizeError, UnknownNameError  # noqa: F401
from . import scurnn  # noqa: F401  (registers "scurnn")

__all__ = ["MODELS", "RecurrentModel", "build_model", "get_model_class"]

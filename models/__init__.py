"""Model registry: importing this package registers every architecture module."""
from .base import MODELS, RecurrentModel, build_model, get_model_class  # noqa: F401
# Each import registers its model under its ``name``.
from . import scurnn  # noqa: F401  (scurnn)
from . import eurnn, exprnn, fcurnn, gru, lstm, ornn, scornn, urnn  # noqa: F401

__all__ = ["MODELS", "RecurrentModel", "build_model", "get_model_class"]

"""Model registry: importing this package registers every model defined in its modules."""
import importlib
import pkgutil

from .base import MODELS, RecurrentModel, build_model, get_model_class

# Every module of this folder is imported, and each RecurrentModel subclass with a ``name``
# registers itself (RecurrentModel.__init_subclass__): a new model is one new file.
# `bench list` reads each class's name, description and paper from these files without importing them
# (bench/catalog.py): keep them string literals; tests/test_cli_speed.py checks it.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "RecurrentModel", "build_model", "get_model_class"]

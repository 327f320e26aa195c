"""Task registry: importing this package registers every task defined in its modules."""
import importlib
import pkgutil

from .base import TASKS, Task, build_task, get_task_class

# Every module of this folder is imported, and each Task subclass with a ``name`` registers
# itself (Task.__init_subclass__): a new task is one new file.
# `bench list` reads each class's name and description from these files without importing them
# (bench/catalog.py): keep them string literals; tests/test_cli_speed.py checks it.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task", "build_task", "get_task_class"]

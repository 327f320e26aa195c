"""Task registry: importing this package registers every task module."""
from .base import TASKS, Task, build_task, get_task_class  # noqa: F401
from . import adding, copying, mnist, speech, timit  # noqa: F401

__all__ = ["TASKS", "Task", "build_task", "get_task_class"]

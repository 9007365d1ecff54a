"""Tasks and datasets: embedded defaults and local-folder loaders (nothing is downloaded).

The task catalogue (``list_tasks``, ``task_descriptions``, ``DEFAULT_TASK``) loads without
torch; the dataset types are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from esper.data.tasks import DEFAULT_TASK, get_task, list_tasks, task_descriptions

if TYPE_CHECKING:
    from esper.data.augment import RandomCropFlip
    from esper.data.base import ArraySplit, Augmentation, Batch, DatasetError, Split, Task, TokenSplit

__all__ = [
    "DEFAULT_TASK",
    "ArraySplit",
    "Augmentation",
    "Batch",
    "DatasetError",
    "RandomCropFlip",
    "Split",
    "Task",
    "TokenSplit",
    "get_task",
    "list_tasks",
    "task_descriptions",
]

_LAZY = {
    "RandomCropFlip": "esper.data.augment",
    **dict.fromkeys(
        ("ArraySplit", "Augmentation", "Batch", "DatasetError", "Split", "Task", "TokenSplit"),
        "esper.data.base",
    ),
}


def __getattr__(name: str) -> Any:
    """Import a dataset type's module on first use (it needs torch)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'esper.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

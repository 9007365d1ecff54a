"""Tasks and datasets: embedded defaults and local-folder loaders (nothing is downloaded)."""

from esper.data.augment import RandomCropFlip
from esper.data.base import (
    ArraySplit,
    Augmentation,
    Batch,
    DatasetError,
    Split,
    Task,
    TokenSplit,
)
from esper.data.tasks import DEFAULT_TASK, get_task, list_tasks, task_descriptions

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

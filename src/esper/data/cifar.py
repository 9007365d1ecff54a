"""CIFAR-10 from a local folder in its standard python-pickle format (never downloaded)."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper.data.augment import RandomCropFlip
from esper.data.base import ArraySplit, DatasetError

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
INPUT_SHAPE = (3, 32, 32)

# The globals a batch file may name: what numpy arrays pickle through (numpy 1 and 2 module
# names; protocol 2 to 5), and `_codecs.encode`, which Python 3 uses for bytes in protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Loads plain containers and numpy arrays, and refuses any other global (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: batch files hold only numpy arrays and lists"
            )
        return super().find_class(module, name)


def _missing_message(root: Path, missing: list[str]) -> str:
    return (
        f"CIFAR-10 not found under data_dir={str(root)!r}: expected the folder {FOLDER_NAME!r} "
        f"(holding {', '.join((*TRAIN_FILES, TEST_FILE))}) either as data_dir itself or "
        f"inside it; missing: {', '.join(missing)}. Download the CIFAR-10 python version, "
        f"{ARCHIVE_NAME}, from {ARCHIVE_URL} and extract it into {str(root)!r} "
        f"(tar -xzf {ARCHIVE_NAME} -C {root}), which creates {str(root / FOLDER_NAME)!r}."
    )


def find_cifar_folder(data_dir: str | Path) -> Path:
    """The folder holding the batch files: `data_dir` itself or `data_dir/cifar-10-batches-py`.

    Raises:
        DatasetError: neither holds all six batch files; says what to download.
    """
    root = Path(data_dir).expanduser()
    names = (*TRAIN_FILES, TEST_FILE)
    candidates = (root, root / FOLDER_NAME)
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    # Report the missing files of whichever candidate got closest.
    best = max(candidates, key=lambda f: sum((f / n).is_file() for n in names))
    missing = [str(best / n) for n in names if not (best / n).is_file()]
    raise DatasetError(_missing_message(root, missing))


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) from one batch file."""
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *INPUT_SHAPE)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"{str(path)!r} is not a CIFAR-10 batch (a dict with b'data' uint8 [N, 3072] and "
            f"b'labels'): {err!r}. Re-extract it from {ARCHIVE_NAME} ({ARCHIVE_URL})."
        ) from err
    if data.shape[0] != labels.shape[0] or not np.all((labels >= 0) & (labels < NUM_CLASSES)):
        raise DatasetError(
            f"{str(path)!r} has {data.shape[0]} images and {labels.shape[0]} labels (expected "
            f"as many labels as images, each in [0, {NUM_CLASSES})); re-extract it from "
            f"{ARCHIVE_NAME} ({ARCHIVE_URL})."
        )
    return data, labels


def _split(paths: list[Path], augment: bool) -> ArraySplit:
    parts = [_read_batch(p) for p in paths]
    x = torch.from_numpy(np.concatenate([d for d, _ in parts]))
    y = torch.from_numpy(np.concatenate([lab for _, lab in parts]))
    # Images stay uint8; a batch becomes float (x / 255 - mean) / std = x * scale + shift.
    std = torch.tensor(STD).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * std)
    shift = -torch.tensor(MEAN).view(1, 3, 1, 1) / std
    return ArraySplit(x, y, RandomCropFlip(padding=4) if augment else None, scale, shift)


@functools.lru_cache(maxsize=2)
def load_cifar_splits(folder: Path) -> tuple[ArraySplit, ArraySplit]:
    """(train: the five data batches, augmented; val: test_batch), cached per folder."""
    return _split([folder / n for n in TRAIN_FILES], True), _split([folder / TEST_FILE], False)

"""The 8x8 handwritten digits (UCI), shipped in the package: the default task, no download.

``digits.npz`` holds the 1,797 images as uint8 [N, 8, 8] in 0..16 and their labels as uint8 [N],
identical to ``sklearn.datasets.load_digits()`` (``images`` and ``target``), so no download and
no scikit-learn are needed.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from esper.data.base import ArraySplit

# The split is fixed, independent of any run seed, so every run scores on the same examples.
SPLIT_SEED = 0
VAL_FRACTION = 0.2
NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)
DATA_FILE = "digits.npz"


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, val), each sorted, with `round(val_fraction * n_c)` of every class c in val.

    Args:
        labels: integer class labels [N].
        val_fraction: share of each class that goes to validation, in (0, 1).
        seed: seeds the per-class shuffles; the same seed always gives the same split.
    """
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_val = round(val_fraction * members.numel())
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits: images uint8 [1797, 8, 8] with values 0..16, labels uint8 [1797]."""
    with resources.files("esper.data").joinpath(DATA_FILE).open("rb") as f, np.load(f) as data:
        return data["images"], data["labels"]

RAW_MAX = 16.0
"""Raw pixel values are 0..16."""


@functools.lru_cache(maxsize=1)
def load_digits_splits() -> tuple[ArraySplit, ArraySplit]:
    """(train, val) of normalised images [N, 1, 8, 8] float32 and labels [N] int64, cached."""
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images).float().div_(RAW_MAX).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(labels).long()
    train_idx, val_idx = stratified_split(y, VAL_FRACTION, SPLIT_SEED)
    mean, std = _train_stats(x, train_idx)
    x = (x - mean) / std
    return ArraySplit(x[train_idx], y[train_idx]), ArraySplit(x[val_idx], y[val_idx])


def _train_stats(x: torch.Tensor, train_idx: torch.Tensor) -> tuple[float, float]:
    """Statistics from the training split only, so nothing about val leaks into the inputs."""
    return float(x[train_idx].mean()), float(x[train_idx].std())


@functools.lru_cache(maxsize=1)
def normalization() -> dict[str, object]:
    """How a raw 0..16 image becomes the model's input: ``(raw / 16 - mean) / std``."""
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images).float().div_(RAW_MAX).unsqueeze(1)
    train_idx, _ = stratified_split(torch.from_numpy(labels).long(), VAL_FRACTION, SPLIT_SEED)
    mean, std = _train_stats(x, train_idx)
    return {"divide_by": RAW_MAX, "mean": [mean], "std": [std]}

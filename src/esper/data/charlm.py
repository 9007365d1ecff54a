"""Character-level text: CPython's own pydoc topics (always installed) or a user's file."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from esper.data.base import DatasetError, TokenSplit
from esper.errors import ConfigError

TRAIN_FRACTION = 0.9


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> str:
    """The pydoc help topics that ship with every CPython, joined in sorted-key order (~0.46M chars)."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def read_text_file(text_file: str | Path) -> str:
    """The UTF-8 contents of `text_file`, with errors that say what to fix."""
    path = Path(text_file).expanduser()
    if not path.is_file():
        raise DatasetError(
            f"text_file={str(text_file)!r} is not a file; pass the path of a UTF-8 text file, "
            "or leave text_file unset to use the built-in corpus (CPython's pydoc topics)."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"text_file={str(text_file)!r} is not valid UTF-8 ({err.reason} at byte "
            f"{err.start}); convert it to UTF-8 first."
        ) from err


def encode(text: str) -> tuple[tuple[str, ...], torch.Tensor]:
    """(vocabulary: the sorted distinct characters, token ids int64 [len(text)])."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_codes, ids = np.unique(codes, return_inverse=True)
    vocab = tuple(chr(int(c)) for c in vocab_codes)
    return vocab, torch.from_numpy(ids.astype(np.int64).reshape(-1))


def char_splits(text: str, block_size: int, source: str) -> tuple[tuple[str, ...], TokenSplit, TokenSplit]:
    """(vocab, train: the first 90% of the text, val: the rest) as windows of `block_size`.

    Raises:
        ConfigError: the validation part is too short to hold one window.
    """
    n_val_needed = block_size + 1
    if len(text) - int(TRAIN_FRACTION * len(text)) < n_val_needed:
        needed = int(np.ceil(n_val_needed / (1 - TRAIN_FRACTION))) + 1
        raise ConfigError(
            f"{source} has {len(text)} characters; block_size={block_size} needs about "
            f"{needed} so its last 10% holds one window of {n_val_needed}. "
            "Use a longer text or a smaller block_size."
        )
    vocab, ids = encode(text)
    n_train = int(TRAIN_FRACTION * len(ids))
    return vocab, TokenSplit(ids[:n_train], block_size), TokenSplit(ids[n_train:], block_size)

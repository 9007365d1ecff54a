"""Batches from anywhere: Esper's tasks, a ``DataLoader``, or any iterable of batches.

The engine reads data only through these functions, so a user's ``DataLoader`` (its sampler
shuffles; ``set_epoch`` is called where the loader or its sampler has it), a list of
``(inputs, targets)`` tuples and an Esper task are alike to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from esper.data import Split
from esper.errors import ConfigError

__all__ = [
    "BatchError",
    "TaskBatches",
    "data_rng_state",
    "epoch_seed",
    "iter_batches",
    "load_data_rng_state",
    "set_data_epoch",
    "unpack_batch",
]

INPUT_KEYS = ("inputs", "input", "input_ids", "x")
TARGET_KEYS = ("targets", "target", "labels", "label", "y")


class BatchError(ConfigError):
    """A batch that is not ``(inputs, targets)`` (a tuple, or a dict with known keys)."""


def epoch_seed(seed: int, epoch: int) -> int:
    """A per-epoch data seed: resuming at any epoch boundary draws the same batches."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


class TaskBatches:
    """One split of an Esper task as an iterable of batches, re-drawn every epoch.

    Args:
        split: the task's split.
        batch_size: examples per batch.
        device: where the batches are made (the split caches one copy per device).
        seed: shuffle (and augment) with a generator seeded by ``(seed, epoch)``; None keeps
            the stored order (validation).
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, seed: int | None) -> None:
        self.split, self.batch_size, self.device, self.seed = split, batch_size, device, seed
        self.epoch = 0
        self.rank, self.world_size, self.even = 0, 1, False

    def sharded(self, rank: int, world_size: int, *, even: bool) -> TaskBatches:
        """Rank ``rank``'s part of every epoch: rows ``rank::world_size`` of each batch of
        ``batch_size * world_size`` drawn as one process would draw it (same seed, same order),
        so the union over ranks is the 1-rank epoch at that batch size.

        ``even`` (training under DDP) cuts each batch to a multiple of ``world_size`` rows, so
        every rank takes the same number of steps with batches of the same size; an epoch then
        leaves out its last ``len(split) % world_size`` examples.
        """
        shard = TaskBatches(self.split, self.batch_size, self.device, self.seed)
        shard.epoch, shard.rank, shard.world_size, shard.even = self.epoch, rank, world_size, even
        return shard

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's order from this epoch's seed."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.split), self.batch_size * self.world_size)
        last = rest - rest % self.world_size if self.even else rest  # rows of the last batch
        return full + (1 if last > self.rank else 0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        size = self.batch_size * self.world_size
        if self.seed is None:
            batches = self.split.ordered_batches(size, self.device)
        else:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            batches = self.split.shuffled_batches(size, generator, self.device)
        return iter(batches) if self.world_size == 1 else self._rows(batches)

    def _rows(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's rows of each global batch."""
        for x, y in batches:
            rows = x.shape[0] - x.shape[0] % self.world_size if self.even else x.shape[0]
            if self.rank < rows:
                yield x[self.rank : rows : self.world_size], y[self.rank : rows : self.world_size]


def set_data_epoch(data: Iterable[Any], epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the data, or on its sampler, where they have one."""
    for owner in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        set_epoch = getattr(owner, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


def _generators(data: Iterable[Any]) -> list[torch.Generator]:
    """The torch generators a loader draws its order from (its own and its sampler's)."""
    found: list[torch.Generator] = []
    for owner in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def data_rng_state(data: Iterable[Any] | None) -> list[Tensor]:
    """The states of the data's own generators (empty when it draws from the global RNG)."""
    return [] if data is None else [g.get_state() for g in _generators(data)]


def load_data_rng_state(data: Iterable[Any] | None, states: list[Tensor]) -> None:
    """Restore :func:`data_rng_state`; a different number of generators is an error."""
    gens = [] if data is None else _generators(data)
    if len(gens) != len(states):
        raise ConfigError(
            f"the checkpoint holds {len(states)} data generator state(s) but the data has "
            f"{len(gens)}: build the DataLoader as in the run that wrote the checkpoint"
        )
    for gen, state in zip(gens, states, strict=True):
        gen.set_state(state)


def unpack_batch(batch: Any) -> tuple[Any, Tensor]:
    """``(inputs, targets)`` from a tuple/list of two, or a dict with input and target keys."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        inputs, targets = batch
    elif isinstance(batch, Mapping):
        ins = [k for k in INPUT_KEYS if k in batch]
        outs = [k for k in TARGET_KEYS if k in batch]
        if not ins or not outs:
            raise BatchError(
                f"a dict batch needs an input key (one of {list(INPUT_KEYS)}) and a target key "
                f"(one of {list(TARGET_KEYS)}); got keys {sorted(map(str, batch))}"
            )
        inputs, targets = batch[ins[0]], batch[outs[0]]
    else:
        size = f" of length {len(batch)}" if isinstance(batch, tuple | list) else ""
        raise BatchError(
            f"expected each batch to be (inputs, targets) or a dict with input/target keys; "
            f"got a {type(batch).__name__}{size}"
        )
    if not isinstance(targets, Tensor):
        raise BatchError(f"batch targets must be a tensor, got {type(targets).__name__}")
    return inputs, targets


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)  # a no-op when it is already there
    if isinstance(value, tuple | list):
        return type(value)(_to(v, device) for v in value)
    return value


def iter_batches(data: Iterable[Any], device: torch.device) -> Iterator[tuple[Any, Tensor]]:
    """Every batch of one pass over ``data`` as ``(inputs, targets)`` on ``device``."""
    for batch in data:
        inputs, targets = unpack_batch(batch)
        yield _to(inputs, device), targets.to(device, non_blocking=True)

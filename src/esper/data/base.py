"""The Task contract: in-memory splits, batching driven only by a torch.Generator, and scoring."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from esper.errors import ConfigError

Batch = tuple[Tensor, Tensor]
Device = torch.device | str

TOPOLOGIES = ("cnn", "transformer")
HOST_FACTORIES = {"CNNHost": "cnn", "TransformerHost": "transformer"}


class DatasetError(ConfigError):
    """A dataset that must be provided by hand is missing or unreadable where it was looked for."""


class Augmentation(Protocol):
    """A random transform of training inputs whose randomness is drawn one epoch at a time."""

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """Parameters [n, ...] for `n` examples, drawn from `generator` on its device."""
        ...

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """Transform a batch `x` [B, ...] with its rows of parameters [B, ...]."""
        ...


class Split(Protocol):
    """One split of a task, held in memory; `len()` is the number of examples in one epoch."""

    def __len__(self) -> int: ...

    def shuffled_batches(
        self, batch_size: int, generator: torch.Generator, device: Device
    ) -> Iterator[Batch]: ...

    def ordered_batches(self, batch_size: int, device: Device) -> Iterator[Batch]: ...


def _device_key(device: Device) -> str:
    return str(torch.device(device))


@dataclass(frozen=True, eq=False)
class ArraySplit:
    """Examples as in-memory tensors, `x` [N, ...] and integer labels `y` [N].

    A batch is `x[idx]`, then `augment` (training only), then `x * scale + shift` in float32
    when `scale`/`shift` are given — this lets image data stay uint8 (4x less memory) and be
    normalised per batch. Device copies are made once per device and reused every epoch.
    """

    x: Tensor
    y: Tensor
    augment: Augmentation | None = None
    scale: Tensor | None = None
    shift: Tensor | None = None
    _copies: dict[str, tuple[Tensor, ...]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        assert self.x.shape[0] == self.y.shape[0], "x and y must have one row per example"
        assert (self.scale is None) == (self.shift is None), "give scale and shift together"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def _on(self, device: Device) -> tuple[Tensor, ...]:
        key = _device_key(device)
        if key not in self._copies:
            affine = () if self.scale is None or self.shift is None else (self.scale, self.shift)
            self._copies[key] = tuple(t.to(device) for t in (self.x, self.y, *affine))
        return self._copies[key]

    def _prepare(self, x: Tensor, affine: tuple[Tensor, ...]) -> Tensor:
        if not affine:
            return x
        scale, shift = affine
        return torch.addcmul(shift, x.float(), scale)

    def shuffled_batches(
        self, batch_size: int, generator: torch.Generator, device: Device
    ) -> Iterator[Batch]:
        """Every example once, in an order drawn from `generator` now; augmented if the split is.

        The epoch's randomness (order, augmentation parameters) is drawn here on the
        generator's device — so a seed gives the same epoch on any data device — and copied to
        the data's device once, not per batch: each such copy is a host-device sync on a GPU.
        """
        x, y, *affine = self._on(device)
        n = len(self)
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        augment = self.augment
        params = None if augment is None else augment.draw(n, generator).to(x.device)

        def batches() -> Iterator[Batch]:
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb = x.index_select(0, idx)
                if augment is not None and params is not None:
                    xb = augment.apply(xb, params[start : start + batch_size])
                yield self._prepare(xb, tuple(affine)), y.index_select(0, idx)

        return batches()

    def ordered_batches(self, batch_size: int, device: Device) -> Iterator[Batch]:
        """Every example once, in stored order, never augmented."""
        x, y, *affine = self._on(device)
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            yield self._prepare(x[start:end], tuple(affine)), y[start:end]


@dataclass(frozen=True, eq=False)
class TokenSplit:
    """A token stream `tokens` [L] read as windows: x = tokens[i:i+T], y = tokens[i+1:i+T+1].

    An epoch is `(L - 1) // block_size` windows: random starts for training, and for
    evaluation the fixed non-overlapping tiling starting at 0.
    """

    tokens: Tensor
    block_size: int
    _copies: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        assert self.tokens.dim() == 1, "tokens must be a 1-D stream"
        assert len(self) >= 1, "the stream must hold at least one window"

    def __len__(self) -> int:
        return (int(self.tokens.shape[0]) - 1) // self.block_size

    def _on(self, device: Device) -> Tensor:
        key = _device_key(device)
        if key not in self._copies:
            self._copies[key] = self.tokens.to(device)
        return self._copies[key]

    def _windows(self, tokens: Tensor, starts: Tensor) -> Batch:
        offsets = torch.arange(self.block_size + 1, device=tokens.device)
        window = tokens[starts[:, None] + offsets]  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def shuffled_batches(
        self, batch_size: int, generator: torch.Generator, device: Device
    ) -> Iterator[Batch]:
        """`len(self)` windows at uniformly random starts drawn from `generator` now."""
        tokens = self._on(device)
        n_starts = int(tokens.shape[0]) - self.block_size  # starts 0 .. L - T - 1
        starts = torch.randint(n_starts, (len(self),), generator=generator, device=generator.device)
        starts = starts.to(tokens.device)  # one copy per epoch, not per batch
        return (self._windows(tokens, starts[s : s + batch_size]) for s in range(0, len(self), batch_size))

    def ordered_batches(self, batch_size: int, device: Device) -> Iterator[Batch]:
        """The non-overlapping windows starting at 0, T, 2T, ..., in order."""
        tokens = self._on(device)
        starts = torch.arange(len(self), device=tokens.device) * self.block_size
        for s in range(0, len(self), batch_size):
            yield self._windows(tokens, starts[s : s + batch_size])


@dataclass(frozen=True, eq=False)
class Task:
    """A named learning problem: its data, the host that fits it, and how it is scored.

    `host_kwargs` and `options` hold primitives only, so they can go into checkpoints and
    `get_task(task.name, **task.options)` rebuilds the same task. `num_classes` is the
    number of output classes (the vocabulary size for language tasks). `default_lr` is
    for AdamW.
    """

    name: str
    description: str
    topology: str
    host_factory: str
    host_kwargs: dict[str, Any]
    train: Split
    val: Split
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    default_epochs: int
    default_lr: float
    options: dict[str, Any]
    vocab: tuple[str, ...] = ()
    normalization: dict[str, Any] | None = None
    """How raw inputs become the model's: ``x = (raw / divide_by - mean) / std`` per channel
    (None: inputs are used as they are, e.g. token ids)."""

    def __post_init__(self) -> None:
        assert self.topology in TOPOLOGIES, f"unknown topology {self.topology!r}"
        assert HOST_FACTORIES.get(self.host_factory) == self.topology, "host/topology mismatch"
        assert self.batch_size >= 1, "batch_size must be positive"

    @property
    def n_train(self) -> int:
        """Examples (windows, for language tasks) in one training epoch."""
        return len(self.train)

    @property
    def n_val(self) -> int:
        """Examples (windows, for language tasks) in one evaluation pass."""
        return len(self.val)

    def with_host_channels(self, channels: int) -> Task:
        """The same task with its host ``channels`` wide (CNN base channels, transformer
        embedding width): static models of any size for honest comparisons."""
        key = "base_channels" if self.topology == "cnn" else "n_embd"
        options = {**self.options, "host_channels": channels}
        return dataclasses.replace(self, host_kwargs={**self.host_kwargs, key: channels}, options=options)

    def make_host(self) -> nn.Module:
        """Build a freshly initialised host for this task (seed torch first for reproducibility)."""
        from esper.kasmina import host as hosts  # deferred: only building a host needs kasmina

        host: nn.Module = getattr(hosts, self.host_factory)(**self.host_kwargs)
        return host

    def train_batches(self, generator: torch.Generator, device: Device = "cpu") -> Iterator[Batch]:
        """One shuffled (and, where the task has one, augmented) epoch of (x, y) batches.

        All of the epoch's randomness (order, windows, augmentation) is drawn from `generator`
        when this is called and nothing else is random, so saving `generator.get_state()` at an
        epoch boundary is enough to resume exactly.
        """
        return self.train.shuffled_batches(self.batch_size, generator, device)

    def val_batches(self, device: Device = "cpu") -> Iterator[Batch]:
        """The validation set in a fixed order, never augmented."""
        return self.val.ordered_batches(self.batch_size, device)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy; logits [B, C] with targets [B], or [B, T, V] with [B, T]."""
        return cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def correct(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """(number of correct argmax predictions as a 0-dim tensor, number of predictions).

        The hits stay on the device so an engine can sum them over an epoch without syncing.
        """
        hits = (logits.argmax(dim=-1) == targets).sum()
        return hits, targets.numel()

"""Data-parallel training across processes (``torch.distributed``, launched by ``torchrun``).

The engine talks to the other ranks only through a :class:`Communicator`; the base class is the
single process, where every call is the identity. :class:`ProcessGroupCommunicator` is the
data-parallel one:

- ``all_sum``: the one reduction per pass (losses, hits, counts; counterfactual hits), so
  every rank's metrics, governor verdict and controller observation are the same;
- ``decide``: the controller decides on rank 0 and the action's primitives are broadcast;
- ``wrap``: the model in ``DistributedDataParallel``, again after every structural change (DDP
  registers gradient hooks only for the parameters present when it wraps: a seed added later
  would train on each rank alone and the ranks would drift apart without an error);
- ``sync_buffers``: rank 0's buffers (BatchNorm statistics) after a training pass, as DDP
  itself does before each training forward;
- ``shard``: each rank's part of the training and validation data.

:func:`distributed_session` starts the process group from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``): gloo on CPU, NCCL on CUDA, each rank on GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from esper.errors import DistributedError
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.actions import Action
from esper.leyline.observation import Observation, Policy
from esper.leyline.stages import SeedStage, is_active_stage
from esper.tolaria.amp import resolve_device
from esper.tolaria.data import TaskBatches

__all__ = [
    "Communicator",
    "Launch",
    "ProcessGroupCommunicator",
    "check_world_size",
    "ddp_wrap",
    "distributed_session",
    "idle_parameter_names",
    "shard_data",
]


@dataclass(frozen=True)
class Launch:
    """Where this process sits in the job: torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        """Read the launcher's variables (a plain ``python`` run is rank 0 of 1)."""
        env = os.environ if env is None else env
        values = {}
        for field, name, default in (
            ("rank", "RANK", 0),
            ("world_size", "WORLD_SIZE", 1),
            ("local_rank", "LOCAL_RANK", 0),
        ):
            raw = env.get(name)
            try:
                values[field] = default if raw is None else int(raw)
            except ValueError:
                raise DistributedError(f"{name}={raw!r} is not an integer (torchrun sets it)") from None
        launch = cls(**values)
        if launch.world_size < 1 or not 0 <= launch.rank < launch.world_size or launch.local_rank < 0:
            raise DistributedError(
                f"RANK={launch.rank}, WORLD_SIZE={launch.world_size}, LOCAL_RANK={launch.local_rank} "
                f"is not a valid launch: expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
            )
        return launch

    def device(self, spec: str) -> torch.device:
        """This rank's device for ``--device spec``: under a multi-process launch every CUDA
        choice (``auto`` with CUDA, ``cuda``, ``cuda:N``) means GPU ``LOCAL_RANK``."""
        device = _resolve(spec)
        if self.world_size == 1 or device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK={self.local_rank} needs GPU {self.local_rank}, but this machine has "
                f"{torch.cuda.device_count()}: start at most that many processes per node"
            )
        return torch.device("cuda", self.local_rank)


def _resolve(spec: str) -> torch.device:
    try:
        return resolve_device(spec)
    except ValueError as exc:
        raise DistributedError(str(exc)) from None


class Communicator:
    """The other ranks, as the engine sees them; this base class is a single process (no-op)."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that decides and writes the run directory."""
        return self.rank == 0

    def all_sum(self, values: Tensor) -> Tensor:
        """``values`` summed over ranks (in place)."""
        return values

    def decide(self, controller: Policy, observation: Observation) -> Action:
        """The controller's action for ``observation``, the same on every rank."""
        return controller.decide(observation)

    def wrap(self, model: MorphogeneticModel) -> nn.Module:
        """The module training batches run through."""
        return model

    def sync_buffers(self, model: nn.Module) -> None:
        """Make the model's buffers the same on every rank."""

    def shard(self, data: Iterable[Any], *, train: bool) -> Iterable[Any]:
        """This rank's part of ``data``."""
        return data


class ProcessGroupCommunicator(Communicator):
    """The ranks of the default process group (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def all_sum(self, values: Tensor) -> Tensor:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def decide(self, controller: Policy, observation: Observation) -> Action:
        payload = [controller.decide(observation).to_dict() if self.is_main else None]
        dist.broadcast_object_list(payload, src=0)
        assert payload[0] is not None
        return Action.from_dict(payload[0])

    def wrap(self, model: MorphogeneticModel) -> nn.Module:
        return ddp_wrap(model)

    def sync_buffers(self, model: nn.Module) -> None:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def shard(self, data: Iterable[Any], *, train: bool) -> Iterable[Any]:
        return shard_data(data, self.rank, self.world_size, train=train)


@contextmanager
def distributed_session(
    device_spec: str, launch: Launch | None = None, timeout: timedelta = timedelta(minutes=10)
) -> Iterator[Communicator]:
    """The communicator for this process: a process group when launched with several ranks.

    Starts the default group (gloo on CPU, NCCL on CUDA) unless one is running already, and
    destroys the one it started on exit. A peer that dies makes the next collective fail
    (gloo: at once; ``timeout`` bounds a peer that hangs).
    """
    launch = launch or Launch.from_env()
    device = launch.device(device_spec)
    if launch.world_size == 1:
        yield Communicator(device)
        return
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=timeout)
    try:
        yield ProcessGroupCommunicator(device)
    finally:
        if owned:
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- the DDP wrap
def idle_parameter_names(model: MorphogeneticModel) -> list[str]:
    """Seed parameters the current stages' forward does not reach (DESIGN, forward by stage):
    an empty, GERMINATED or failed slot runs no seed; TRAINING runs the seed but not its GATE
    network. DDP must not wait for their gradients."""
    idle: set[int] = set()
    for slot in model.slots():
        if not is_active_stage(slot.stage):
            idle |= {id(p) for p in slot.seed_parameters()}
        elif slot.stage == SeedStage.TRAINING and slot.gate is not None:
            idle |= {id(p) for p in slot.gate.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in idle]


def ddp_wrap(model: MorphogeneticModel) -> DistributedDataParallel:
    """``model`` in a fresh ``DistributedDataParallel`` with hooks on every parameter its forward
    reaches now, and every parameter and buffer equal to rank 0's.

    DDP's own start-up broadcast skips the parameters it ignores (idle seeds), so those are
    broadcast here: a seed becomes active already equal on every rank.
    """
    idle = idle_parameter_names(model)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, idle)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in idle:
            dist.broadcast(params[name].data, src=0)
    return wrapped


# ----------------------------------------------------------------------------- data shards
def check_world_size(n_batches: int, world_size: int, what: str) -> None:
    """Every rank needs batches to train on: at least as many batches as ranks."""
    if world_size > n_batches:
        raise DistributedError(
            f"world size {world_size} is larger than the {n_batches} batch(es) of {what}: every rank "
            f"needs at least one batch per epoch; start at most {n_batches} process(es) or use a "
            f"smaller --batch-size"
        )


def shard_data(data: Iterable[Any], rank: int, world_size: int, *, train: bool) -> Iterable[Any]:
    """This rank's part of ``data``; the union over ranks is the data's epoch.

    - Esper's :class:`TaskBatches`: rows ``rank::world_size`` of each batch of
      ``batch_size * world_size`` drawn by the 1-rank shuffle (``batch_size`` is per rank).
    - a ``DataLoader``: rebuilt on a ``DistributedSampler`` (training; shuffled if the loader
      was, seeded by its generator) or on this rank's slice of the stored order (validation).
    - a list (or other sized iterable) of batches: batches ``rank::world_size``.

    Training shards are the same size on every rank, as DDP needs (the same number of steps,
    equal weights in its gradient mean): the last ``n % world_size`` examples (batches, for
    a list) of an epoch are left out. Validation shards keep every example.
    """
    if world_size == 1:
        return data
    if train and isinstance(data, Sized):
        check_world_size(len(data), world_size, "the training data")
    if isinstance(data, TaskBatches):
        return data.sharded(rank, world_size, even=train)
    if isinstance(data, DataLoader):
        return _shard_loader(data, rank, world_size, train=train)
    if isinstance(data, Sized) and hasattr(data, "__getitem__"):
        batches = list(data)
        end = len(batches) - len(batches) % world_size if train else len(batches)
        return batches[rank:end:world_size]
    raise DistributedError(
        f"cannot split a {type(data).__name__} across {world_size} ranks: pass a DataLoader, "
        f"a list of batches or TaskBatches"
    )


class _RankSlice(Sampler[int]):
    """Indices ``rank::world_size`` of a dataset in stored order: no padding, no repeats."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, n, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _shard_loader(loader: DataLoader[Any], rank: int, world_size: int, *, train: bool) -> DataLoader[Any]:
    if isinstance(loader.sampler, DistributedSampler):
        return loader  # the user split it already
    if loader.batch_size is None:
        raise DistributedError(
            "cannot split a DataLoader with a custom batch_sampler across ranks: build it on a "
            "torch.utils.data.DistributedSampler yourself"
        )
    dataset = loader.dataset
    sampler: Sampler[int]
    if train:
        seed = loader.generator.initial_seed() if loader.generator is not None else 0
        shuffle = isinstance(loader.sampler, RandomSampler)
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed, drop_last=True)
    else:
        sampler = _RankSlice(len(dataset), rank, world_size)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )

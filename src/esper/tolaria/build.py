"""Build the engine for one of Esper's tasks: the same way for ``train``, ``eval`` and the env."""

from __future__ import annotations

import random

import torch

from esper.data import Task
from esper.kasmina.gates import QualityGates
from esper.kasmina.model import MorphogeneticModel
from esper.nissa.telemetry import Telemetry
from esper.tolaria.amp import resolve_amp, resolve_device
from esper.tolaria.config import RunConfig
from esper.tolaria.data import TaskBatches
from esper.tolaria.distributed import Communicator
from esper.tolaria.engine import Engine, EngineConfig
from esper.tolaria.governor import loss_ceiling

__all__ = ["engine_config", "engine_for_task", "engine_settings", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global RNGs (host initialisation draws from them)."""
    random.seed(seed)
    torch.manual_seed(seed)


def engine_config(config: RunConfig, task: Task, device: torch.device) -> EngineConfig:
    """The engine part of a run config, with the task's and device's defaults filled in."""
    return engine_settings(config, task.default_epochs, task.default_lr, task.num_classes, device)


def engine_settings(
    config: RunConfig, default_epochs: int, default_lr: float, num_classes: int, device: torch.device
) -> EngineConfig:
    """The engine part of a run config, with these defaults and the device's filled in
    (``num_classes`` sets the governor's cross-entropy ceiling)."""
    return EngineConfig(
        epochs=config.epochs or default_epochs,
        lr=config.lr or default_lr,
        weight_decay=config.weight_decay,
        grad_clip=config.grad_clip,
        amp=resolve_amp(config.amp, device),
        compile=config.compile,
        compile_backend=config.compile_backend,
        max_seed_params=config.max_seed_params,
        blueprints=tuple(config.blueprints) if config.blueprints else None,
        governor_spike_factor=config.governor_spike_factor,
        governor_spike_margin=config.governor_spike_margin,
        governor_window=config.governor_window,
        governor_ceiling=loss_ceiling(num_classes),  # the loss is cross-entropy
    )


def engine_for_task(
    config: RunConfig, task: Task, telemetry: Telemetry | None = None, comm: Communicator | None = None
) -> Engine:
    """A fresh engine (host seeded by ``config.seed``) training ``task``'s host on its data
    (on ``comm``'s device and this rank's shard, when given)."""
    device = resolve_device(config.device) if comm is None else comm.device
    seed_everything(config.seed)
    gates = QualityGates(
        min_training_epochs=config.min_training_epochs,
        min_holding_epochs=config.min_holding_epochs,
        embargo_epochs=config.embargo_epochs,
    )
    model = MorphogeneticModel(task.make_host(), slots=config.slots, gates=gates)  # type: ignore[arg-type]
    return Engine(
        model,
        TaskBatches(task.train, task.batch_size, device, seed=config.seed),
        TaskBatches(task.val, task.batch_size, device, seed=None),
        engine_config(config, task, device),
        loss_fn=task.loss,
        metric_fn=task.correct,
        telemetry=telemetry,
        device=device,
        comm=comm,
    )

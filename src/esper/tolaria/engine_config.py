"""The engine's settings, what one epoch reports, and the builders its constructor runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from esper.errors import ConfigError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.model import MorphogeneticModel
from esper.tolaria.governor import Governor
from esper.tolaria.optim import OptimizerFactory, SchedulerFactory, SeedGroups, adamw, host_groups
from esper.tolaria.trainer import EpochMetrics

__all__ = [
    "EngineConfig",
    "EpochReport",
    "Evaluate",
    "all_blueprints",
    "build_governor",
    "build_groups",
    "check_budget",
]

Evaluate = Callable[[nn.Module], float]
"""A user's validation: the model -> its accuracy (or any higher-is-better score)."""


@dataclass(frozen=True)
class EngineConfig:
    """The engine's settings (the run config's engine part; primitives only).

    Attributes:
        epochs: the run's length (observations report progress against it).
        lr: the default optimizer's learning rate (ignored when an optimizer is given).
        weight_decay: the default optimizer's weight decay.
        grad_clip: max global grad norm (0 disables clipping).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` (resolved already).
        compile: run batches through ``torch.compile`` of the model.
        compile_backend: the ``torch.compile`` backend.
        max_seed_params: the seed parameter budget every action is held to.
        blueprints: blueprints actions may use (default: all for the model's topology).
        governor_spike_factor / governor_spike_margin / governor_window: see :class:`Governor`.
        governor_ceiling: a loss above this is a blow-up (None: no absolute limit).
    """

    epochs: int
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    amp: str = "none"
    compile: bool = False
    compile_backend: str = "inductor"
    max_seed_params: int | None = None
    blueprints: tuple[str, ...] | None = None
    governor_spike_factor: float = 3.0
    governor_spike_margin: float = 0.1
    governor_window: int = 5
    governor_ceiling: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"EngineConfig.epochs must be an int >= 1, got {self.epochs!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"EngineConfig.amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}")


@dataclass(frozen=True)
class EpochReport:
    """What one epoch measured (``train`` is None when the user's loop trained it)."""

    epoch: int
    train: EpochMetrics | None
    val_loss: float | None
    val_accuracy: float
    contributions: dict[str, float] = field(default_factory=dict)
    rollback: str | None = None


def _build_optimizer(
    optimizer: Optimizer | OptimizerFactory | None, model: MorphogeneticModel, config: EngineConfig
) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        return optimizer
    factory = optimizer or adamw(config.lr, config.weight_decay)
    built = factory(host_groups(model.get_host_parameters()))
    if not isinstance(built, Optimizer):
        raise ConfigError(
            f"the optimizer factory must return a torch.optim.Optimizer, got {type(built).__name__}"
        )
    return built


def all_blueprints(model: MorphogeneticModel) -> list[str]:
    """Every blueprint some slot of the model takes, in registry order."""
    names: list[str] = []
    for slot in model.slots():
        names += [b for b in slot.blueprint_names() if b not in names]
    return names


def check_budget(model: MorphogeneticModel, budget: int | None, blueprints: tuple[str, ...]) -> None:
    """A budget that no blueprint fits anywhere is a mistake to report before training."""
    if budget is None:
        return
    costs = {
        (s.slot_id, b): BlueprintRegistry.get(s.topology, b).param_estimate(s.channels)
        for s in model.slots()
        for b in blueprints
        if b in s.blueprint_names()
    }
    if costs and min(costs.values()) > budget:
        cheapest = min(costs, key=lambda k: costs[k])
        raise ConfigError(
            f"max_seed_params={budget} is smaller than every blueprint: the cheapest, "
            f"{cheapest[1]!r} at slot {cheapest[0]!r}, needs {costs[cheapest]} parameters"
        )


def build_groups(
    optimizer: Optimizer | OptimizerFactory | None,
    scheduler: LRScheduler | SchedulerFactory | None,
    model: MorphogeneticModel,
    config: EngineConfig,
) -> SeedGroups:
    """The optimizer (given, from a factory, or AdamW) and its scheduler, with seed groups."""
    opt = _build_optimizer(optimizer, model, config)
    sched = scheduler(opt) if callable(scheduler) and not isinstance(scheduler, LRScheduler) else scheduler
    return SeedGroups(opt, model, sched)


def build_governor(config: EngineConfig) -> Governor:
    return Governor(
        config.governor_spike_factor,
        config.governor_spike_margin,
        config.governor_window,
        ceiling=config.governor_ceiling,
    )

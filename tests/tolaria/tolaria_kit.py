"""Shared pieces for the Tolaria tests: tiny tasks, scripted controllers, seeds grown by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from esper.data import ArraySplit, Task, get_task
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.actions import WAIT, Action, LifecycleOp
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage
from esper.nissa.telemetry import Telemetry
from esper.tolaria.build import engine_for_task
from esper.tolaria.config import RunConfig
from esper.tolaria.engine import Engine


def tiny_task(
    name: str = "digits-impaired", n_train: int = 192, n_val: int = 96, batch_size: int = 32
) -> Task:
    """The task with its splits cut to the first examples (a few batches per epoch)."""
    task = get_task(name)
    assert isinstance(task.train, ArraySplit) and isinstance(task.val, ArraySplit)
    return dataclasses.replace(
        task,
        train=ArraySplit(task.train.x[:n_train], task.train.y[:n_train]),
        val=ArraySplit(task.val.x[:n_val], task.val.y[:n_val]),
        batch_size=batch_size,
    )


RESIDUAL = ["conv_heavy", "conv_light", "bottleneck", "depthwise", "attention", "conv_small", "norm"]
"""The residual blueprints, in the heuristic's old order (``blueprints=RESIDUAL``)."""


def fast_config(out: Path, **changes: Any) -> RunConfig:
    """A run config whose seeds move through the lifecycle in a few epochs."""
    base = dict(
        task="digits-impaired",
        epochs=6,
        quiet=True,
        out=str(out),
        plateau_window=1,
        plateau_min_delta=0.5,
        min_training_epochs=1,
        min_holding_epochs=1,
        blend_tempo_epochs=2,
        embargo_epochs=1,
        # One seed at a time on a plateau, as the heuristic did before it grew early; tests that
        # need a residual seed to fossilize within 10 epochs also pass RESIDUAL (the default
        # width-first schedule fossilizes nothing in these fast runs).
        germinate_after=None,
        max_in_flight=1,
    )
    return RunConfig(**{**base, **changes})


class ScriptedPolicy:
    """A controller that calls ``script(observation)`` for its action (WAIT when it returns None)."""

    name = "scripted"

    def __init__(self, script: Callable[[Observation], Action | None]) -> None:
        self.script = script
        self.calls = 0

    def decide(self, observation: Observation) -> Action:
        self.calls += 1
        return self.script(observation) or WAIT

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])


def churn(observation: Observation) -> Action | None:
    """Keep every slot busy: germinate, advance to BLENDING, prune, and again after the embargo."""
    for slot in observation.slots:
        if slot.stage == SeedStage.DORMANT:
            return Action(LifecycleOp.GERMINATE, slot=slot.slot_id, blueprint="conv_light", tempo_epochs=3)
        if slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
            return Action(LifecycleOp.ADVANCE, slot=slot.slot_id)
        if slot.stage == SeedStage.BLENDING and slot.epochs_in_stage >= 1:
            return Action(LifecycleOp.PRUNE, slot=slot.slot_id)
    return None


def make_engine(config: RunConfig, task: Task | None = None, telemetry: Telemetry | None = None) -> Engine:
    """A fresh engine on a tiny task (built as every run builds it)."""
    return engine_for_task(config, task or tiny_task(), telemetry)


def run_to_disk(
    config: RunConfig, task: Task | None = None, telemetry: Telemetry | None = None, controller: Any = None
) -> tuple[Engine, Any]:
    """A whole run as the recipe does it (checkpoints into ``config.out``), on a tiny task."""
    from esper.recipes.train import resolve_config, run_engine
    from esper.tamiyo.factory import make_controller

    task = task or tiny_task()
    engine = make_engine(config, task, telemetry)
    controller = controller or make_controller(config)
    run_engine(engine, controller, resolve_config(config, engine, task), task, Path(str(config.out)))
    return engine, controller


def drive(engine: Engine, controller: Any, until: int | None = None) -> None:
    """The run loop: the engine's three calls per epoch, up to ``until`` epochs (default: all)."""
    while engine.epoch < (until or engine.config.epochs):
        engine.train_epoch()
        engine.ask(controller)


def backward_once(model: MorphogeneticModel, x: torch.Tensor) -> None:
    """One forward/backward so seeds in TRAINING see a finite gradient (their G2 check)."""
    model.zero_grad(set_to_none=True)
    model(x).float().sum().backward()


def grow(model: MorphogeneticModel, slot: str, blueprint: str, stage: SeedStage, x: torch.Tensor) -> None:
    """Germinate ``blueprint`` in ``slot`` and advance it to ``stage`` through its real gates.

    The model's gates must allow it (e.g. ``QualityGates(min_training_epochs=0)``); a
    FOSSILIZED target records a positive contribution first.
    """
    model.germinate_seed(blueprint, slot=slot, blend_tempo_epochs=1)
    s = model.slot(slot)
    order = [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]
    for target in order[: order.index(stage) + 1] if stage in order else []:
        if target == SeedStage.BLENDING:
            backward_once(model, x)
        if target == SeedStage.HOLDING:
            s.step_epoch()  # the one-epoch alpha ramp reaches 1.0
        if target == SeedStage.FOSSILIZED:
            s.step_epoch()
            s.record_contribution(0.05)
        result = s.advance_stage(target)
        assert result.passed, result


def assert_valid_stage_chains(events: list[Any]) -> None:
    """Per slot, stage_changed events chain (each starts where the last ended) along legal moves."""
    from esper.leyline.events import StageChanged
    from esper.leyline.stages import is_valid_transition

    last: dict[str, SeedStage] = {}
    for event in events:
        if isinstance(event, StageChanged):
            assert last.get(event.slot, SeedStage.DORMANT) == event.from_stage, event
            assert is_valid_transition(event.from_stage, event.to_stage), event
            last[event.slot] = event.to_stage

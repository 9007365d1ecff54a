"""A whole PPO run: the run folder's sinks around :func:`esper.simic.training.train_ppo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esper.nissa.telemetry import Sink
from esper.recipes.sinks import run_sinks
from esper.simic.training import PPORunConfig, train_ppo

__all__ = ["run_ppo"]


def run_ppo(
    config: PPORunConfig, *, resume: bool = False, extra_sinks: list[Sink] | None = None
) -> dict[str, Any]:
    """Train (or continue) a PPO run into ``config.out``; returns its summary."""

    def sinks() -> list[Sink]:
        folder = run_sinks(
            Path(config.out),
            resume=resume,
            quiet=config.quiet,
            tensorboard=config.tensorboard,
            total_epochs=config.rounds,
            csv=False,
        )
        return [*folder, *(extra_sinks or [])]

    return train_ppo(config, resume=resume, sinks=sinks)

"""A whole PPO run: the run folder (checked, locked) and its sinks around ``train_ppo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esper.nissa.telemetry import Sink
from esper.recipes.run_dir import RunDir
from esper.recipes.sinks import run_sinks
from esper.simic.training import RESUMABLE, PPORunConfig, train_ppo

__all__ = ["run_ppo"]


def run_ppo(
    config: PPORunConfig, *, resume: bool = False, extra_sinks: list[Sink] | None = None
) -> dict[str, Any]:
    """Train (or continue) a PPO run into ``config.out``; returns its summary.

    The folder is a :class:`~esper.recipes.run_dir.RunDir` of kind ``"ppo"``: refused when it
    holds another run, locked while training, and a resume may change only
    :data:`~esper.simic.training.RESUMABLE`.
    """

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

    with RunDir.open(config.out, kind="ppo", resume=resume, config=config.to_dict(), resumable=RESUMABLE):
        return train_ppo(config, resume=resume, sinks=sinks)

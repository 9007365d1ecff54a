"""Build the controller a run config names."""

from __future__ import annotations

from esper.errors import ConfigError
from esper.leyline.observation import Policy
from esper.tamiyo.heuristic import HeuristicConfig, HeuristicPolicy
from esper.tamiyo.simple import RandomPolicy, StaticPolicy
from esper.tolaria.config import CONTROLLERS, RunConfig

__all__ = ["make_controller"]


def make_controller(config: RunConfig) -> Policy:
    """The controller for ``config.controller`` with its knobs taken from the run config."""
    if config.controller == "heuristic":
        return HeuristicPolicy(
            HeuristicConfig(
                plateau_window=config.plateau_window,
                plateau_min_delta=config.plateau_min_delta,
                germinate_after=config.germinate_after,
                max_in_flight=config.max_in_flight,
                blend_tempo_epochs=config.blend_tempo_epochs,
                min_training_epochs=config.min_training_epochs,
                blueprints=tuple(config.blueprints) if config.blueprints else None,
            )
        )
    if config.controller == "static":
        return StaticPolicy()
    if config.controller == "random":
        return RandomPolicy(seed=config.seed)
    if config.controller == "policy" and config.policy:
        from esper.tamiyo.learned import LearnedPolicy

        return LearnedPolicy(config.policy)
    raise ConfigError(f"unknown controller {config.controller!r}; valid: {list(CONTROLLERS)}")

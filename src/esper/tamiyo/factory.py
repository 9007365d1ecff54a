"""The built-in controllers, registered by name, and the controller a run config names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from esper.leyline.observation import Policy
from esper.tamiyo.heuristic import HeuristicConfig, HeuristicPolicy
from esper.tamiyo.registry import ControllerRegistry
from esper.tamiyo.simple import RandomPolicy, StaticPolicy

if TYPE_CHECKING:
    from esper.tolaria.config import RunConfig

__all__ = ["make_controller"]


def make_controller(config: RunConfig) -> Policy:
    """The controller for ``config.controller`` with its knobs taken from the run config.

    Raises:
        ConfigError: a controller name that is not registered (the message lists them).
    """
    return ControllerRegistry.create(config.controller, config)


@ControllerRegistry.register("heuristic", description="rule-based: widen early, keep contributors, prune")
def _heuristic(config: RunConfig) -> Policy:
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


@ControllerRegistry.register("static", description="the host alone, no seeds (the baseline)")
def _static(config: RunConfig) -> Policy:
    return StaticPolicy()


@ControllerRegistry.register("random", description="random legal lifecycle actions, seeded by the run")
def _random(config: RunConfig) -> Policy:
    return RandomPolicy(seed=config.seed)


@ControllerRegistry.register("policy", description="a learned policy from config.policy (a policy.pt)")
def _learned(config: RunConfig) -> Policy:
    from esper.tamiyo.learned import LearnedPolicy  # deferred: the network needs torch

    assert config.policy is not None, "RunConfig refuses controller 'policy' without a policy path"
    return LearnedPolicy(config.policy)


@ControllerRegistry.register("learned", description="the pretrained policy shipped with Esper")
def _pretrained(config: RunConfig) -> Policy:
    from esper.tamiyo.learned import LearnedPolicy, pretrained_policy_path

    return LearnedPolicy(pretrained_policy_path())

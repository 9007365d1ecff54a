"""Controllers that decide lifecycle actions: the heuristic, the learned policy, features, masks."""

from esper.leyline.observation import Observation, Policy, SlotObservation
from esper.tamiyo.factory import make_controller
from esper.tamiyo.heuristic import HeuristicConfig, HeuristicPolicy
from esper.tamiyo.registry import ControllerRegistry, ControllerSpec
from esper.tamiyo.simple import RandomPolicy, StaticPolicy

__all__ = [
    "ControllerRegistry",
    "ControllerSpec",
    "HeuristicConfig",
    "HeuristicPolicy",
    "Observation",
    "Policy",
    "RandomPolicy",
    "SlotObservation",
    "StaticPolicy",
    "make_controller",
]

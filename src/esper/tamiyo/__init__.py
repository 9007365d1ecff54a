"""Controllers that decide lifecycle actions: the heuristic, the learned policy, features, masks."""

from esper.leyline.observation import Observation, Policy, SlotObservation
from esper.tamiyo.heuristic import HeuristicConfig, HeuristicPolicy
from esper.tamiyo.simple import RandomPolicy, StaticPolicy

__all__ = [
    "HeuristicConfig",
    "HeuristicPolicy",
    "Observation",
    "Policy",
    "RandomPolicy",
    "SlotObservation",
    "StaticPolicy",
]

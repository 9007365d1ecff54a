"""Reinforcement learning for growth decisions: the Gymnasium environment, rewards, PPO."""

import gymnasium as _gym

ENV_ID = "esper/Morphogenesis-v0"

if ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="esper.simic.env:MorphogenesisEnv")

__all__ = ["ENV_ID"]

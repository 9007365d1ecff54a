"""Reinforcement learning for growth decisions: the Gymnasium environment, rewards, PPO."""

from esper._gym import ENV_ID
from esper.simic.env import MorphogenesisEnv

__all__ = ["ENV_ID", "MorphogenesisEnv"]

"""Reinforcement learning for growth decisions: the Gymnasium environment, rewards, PPO."""

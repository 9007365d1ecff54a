"""Generalised advantage estimation and the value diagnostics that go with it, as pure functions.

Conventions (CleanRL's, the same as SB3's ``episode_starts``):

* Tensors are ``[T, N]``: ``T`` steps of ``N`` environments; step ``t`` saw observation ``s_t``,
  took an action, got ``rewards[t]`` and the critic said ``values[t] = V(s_t)``.
* ``dones[t]`` is 1 where ``s_t`` is the first observation of an episode, i.e. where the
  *previous* step ended one (so nothing bootstraps across it). ``last_done`` is the same flag
  for the observation after the rollout: 1 where step ``T-1`` ended an episode.
* An episode that ends by a time limit (``truncated``) did not really end: the value of its
  final observation is still owed. Pass ``truncated[t] = 1`` and ``truncated_values[t] =
  V(final observation)`` for such steps; ``dones`` still marks the boundary after them. This
  adds ``gamma * truncated_values[t]`` to the reward of that step, exactly as SB3 does in its
  rollout collector, so terminated steps bootstrap nothing and truncated ones bootstrap
  ``V(final observation)``.

Everything is computed in fp32 whatever dtype the inputs arrive in (bf16/fp16 values from a
critic run under autocast are upcast first), and the results are fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_gae", "explained_variance", "normalize_advantages"]


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_value: Tensor,
    last_done: Tensor,
    gamma: float,
    gae_lambda: float,
    *,
    truncated: Tensor | None = None,
    truncated_values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) advantages and lambda-returns over a rollout.

    Args:
        rewards: ``[T, N]`` reward of each step.
        values: ``[T, N]`` critic value ``V(s_t)``.
        dones: ``[T, N]`` 1 where ``s_t`` starts an episode (see the module docstring).
        last_value: ``[N]`` value of the observation after the rollout.
        last_done: ``[N]`` 1 where the last step ended an episode.
        gamma: discount factor.
        gae_lambda: GAE bias/variance trade-off (0: one-step TD, 1: Monte Carlo).
        truncated: ``[T, N]`` 1 where step ``t`` ended its episode by a time limit.
        truncated_values: ``[T, N]`` value of the final observation of truncated steps
            (ignored elsewhere). Required together with ``truncated``.

    Returns:
        ``(advantages, returns)``, both ``[T, N]`` fp32, with ``returns = advantages + values``.
    """
    if (truncated is None) != (truncated_values is None):
        raise ValueError("pass truncated and truncated_values together, or neither")
    if rewards.shape != values.shape or rewards.shape != dones.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards, values and dones must all be [T, N]; got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)} and {tuple(dones.shape)}"
        )
    rewards, values = rewards.float(), values.float()
    if truncated is not None and truncated_values is not None:
        rewards = rewards + gamma * truncated.float() * truncated_values.float()
    # not_done[t] = 1 when s_{t+1} continues the episode of s_t.
    next_starts = torch.cat([dones[1:].float(), last_done.float().unsqueeze(0)])
    not_done = 1.0 - next_starts
    next_values = torch.cat([values[1:], last_value.float().unsqueeze(0)])
    deltas = rewards + gamma * next_values * not_done - values

    advantages = torch.empty_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def normalize_advantages(advantages: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero-mean, unit-variance advantages (population std), in fp32.

    A single element has zero spread and maps to 0; callers that normalise per minibatch
    should skip minibatches of one sample.
    """
    adv = advantages.float()
    return (adv - adv.mean()) / (adv.std(correction=0) + eps)


def explained_variance(y_pred: Tensor, y_true: Tensor) -> float:
    """``1 - Var[y_true - y_pred] / Var[y_true]``: 1 is a perfect critic, 0 predicts the mean.

    Returns NaN when ``y_true`` has no variance. This reads the result back to the host.
    """
    y_pred, y_true = y_pred.float().flatten(), y_true.float().flatten()
    var_y = y_true.var(correction=0)
    if var_y.item() == 0.0:
        return float("nan")
    return (1.0 - (y_true - y_pred).var(correction=0) / var_y).item()

"""An SB3-style rollout buffer: ``T`` steps of ``N`` environments, yielding typed minibatches.

Step ``t`` stores what the policy saw and did at observation ``s_t`` (observation, action, mask,
log-prob, value), what came back (reward), and whether ``s_t`` started an episode
(``episode_start``, CleanRL's ``dones``: see :mod:`esper.simic.gae`). A step that ended its
episode by a time limit may also pass ``truncated`` and the value of its final observation.

Minibatches are shuffled transitions for a feed-forward policy, and shuffled *environments* —
whole ``T``-step sequences in time order, with the LSTM state recorded at the start of the
rollout — for a recurrent one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from esper.simic.gae import compute_gae
from esper.tamiyo.policy_net import LSTMState

__all__ = ["RolloutBatch", "RolloutBuffer"]


class RolloutBatch(NamedTuple):
    """One minibatch. Feed-forward: every field is ``[B, ...]``. Recurrent: ``[T, E, ...]``
    for ``E`` whole environment sequences, and ``lstm_state`` is their state at ``t = 0``."""

    obs: Tensor
    actions: Tensor
    masks: Tensor
    old_log_probs: Tensor
    old_values: Tensor
    advantages: Tensor
    returns: Tensor
    episode_starts: Tensor
    lstm_state: LSTMState | None


class RolloutBuffer:
    """Fixed-size storage for one rollout; fp32 everywhere except long actions and bool masks.

    Args:
        n_steps: ``T``, steps per environment per rollout.
        n_envs: ``N``, parallel environments.
        obs_dim: observation features.
        n_heads: action heads (width of an action vector).
        mask_dim: width of the flat action mask.
        device: where the tensors live.
        lstm_hidden: LSTM state size for a recurrent policy; 0 for a feed-forward one.
    """

    def __init__(
        self,
        n_steps: int,
        n_envs: int,
        obs_dim: int,
        n_heads: int,
        mask_dim: int,
        device: torch.device | str = "cpu",
        *,
        lstm_hidden: int = 0,
    ) -> None:
        if min(n_steps, n_envs, obs_dim, n_heads, mask_dim) < 1 or lstm_hidden < 0:
            raise ValueError(
                f"buffer sizes must be positive; got n_steps={n_steps}, n_envs={n_envs}, "
                f"obs_dim={obs_dim}, n_heads={n_heads}, mask_dim={mask_dim}, "
                f"lstm_hidden={lstm_hidden}"
            )
        self.n_steps, self.n_envs, self.lstm_hidden = n_steps, n_envs, lstm_hidden
        self.device = torch.device(device)
        shape = (n_steps, n_envs)

        def zeros(*extra: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros(*shape, *extra, dtype=dtype, device=self.device)

        self.obs = zeros(obs_dim)
        self.actions = zeros(n_heads, dtype=torch.long)
        self.masks = zeros(mask_dim, dtype=torch.bool)
        self.log_probs, self.values, self.rewards = zeros(), zeros(), zeros()
        self.episode_starts, self.truncated, self.truncated_values = zeros(), zeros(), zeros()
        self.advantages, self.returns = zeros(), zeros()
        self.initial_state: LSTMState | None = None
        self.pos = 0
        self.ready = False  # advantages computed for a full rollout

    @property
    def full(self) -> bool:
        return self.pos == self.n_steps

    def reset(self, initial_state: LSTMState | None = None) -> None:
        """Start a new rollout; a recurrent policy passes its LSTM state before step 0."""
        if (initial_state is None) != (self.lstm_hidden == 0):
            raise ValueError(
                "pass the policy's LSTM state to reset() exactly when the buffer was built "
                f"with lstm_hidden > 0 (it has lstm_hidden={self.lstm_hidden})"
            )
        if initial_state is not None:
            h, c = initial_state
            self.initial_state = (h.detach().float().clone(), c.detach().float().clone())
        self.pos, self.ready = 0, False

    def add(
        self,
        obs: Tensor,
        actions: Tensor,
        masks: Tensor,
        log_prob: Tensor,
        value: Tensor,
        reward: Tensor,
        episode_start: Tensor,
        *,
        truncated: Tensor | None = None,
        truncated_value: Tensor | None = None,
    ) -> None:
        """Store one step of all ``N`` environments (``[N, ...]`` tensors, any float dtype).

        ``episode_start[i]`` is 1 when ``obs[i]`` is the first observation of an episode;
        ``truncated[i]`` is 1 when this step ended the episode by a time limit, and then
        ``truncated_value[i]`` is the critic's value of the final observation.
        """
        if self.full:
            raise RuntimeError(f"buffer is full ({self.n_steps} steps); call reset() first")
        if self.lstm_hidden and self.initial_state is None:
            raise RuntimeError("a recurrent buffer needs reset(initial_state) before add()")
        if (truncated is None) != (truncated_value is None):
            raise ValueError("pass truncated and truncated_value together, or neither")
        t = self.pos
        self.obs[t] = obs.detach()
        self.actions[t] = actions.detach()
        self.masks[t] = masks.detach()
        self.log_probs[t] = log_prob.detach()
        self.values[t] = value.detach()
        self.rewards[t] = reward.detach()
        self.episode_starts[t] = episode_start.detach()
        if truncated is not None and truncated_value is not None:
            self.truncated[t] = truncated.detach()
            self.truncated_values[t] = truncated_value.detach()
        else:
            self.truncated[t] = 0.0
        self.pos += 1

    def compute_returns_and_advantages(
        self, last_value: Tensor, last_done: Tensor, gamma: float, gae_lambda: float
    ) -> None:
        """Fill ``advantages`` and ``returns`` (fp32) with :func:`compute_gae`.

        Args:
            last_value: ``[N]`` value of the observation after the last step.
            last_done: ``[N]`` 1 where the last step ended an episode.
            gamma: discount factor.
            gae_lambda: GAE lambda.
        """
        if not self.full:
            raise RuntimeError(f"rollout has {self.pos}/{self.n_steps} steps; fill it first")
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.episode_starts,
            last_value.detach().to(self.device), last_done.detach().to(self.device),
            gamma, gae_lambda,
            truncated=self.truncated, truncated_values=self.truncated_values,
        )  # fmt: skip
        self.ready = True

    def minibatches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[RolloutBatch]:
        """One shuffled pass over the rollout.

        Args:
            batch_size: transitions per minibatch. A recurrent buffer takes
                ``max(1, batch_size // T)`` whole environment sequences per minibatch.
            generator: CPU generator for the shuffle (reproducible runs).
        """
        if not self.ready:
            raise RuntimeError("call compute_returns_and_advantages() before minibatches()")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.lstm_hidden:
            yield from self._sequence_batches(max(1, batch_size // self.n_steps), generator)
            return
        perm = torch.randperm(self.n_steps * self.n_envs, generator=generator)
        for idx in perm.to(self.device).split(batch_size):
            yield self._flat_batch(idx)

    def _flat_batch(self, idx: Tensor) -> RolloutBatch:
        def take(x: Tensor) -> Tensor:
            return x.flatten(0, 1)[idx]

        return RolloutBatch(
            take(self.obs), take(self.actions), take(self.masks), take(self.log_probs),
            take(self.values), take(self.advantages), take(self.returns),
            take(self.episode_starts), None,
        )  # fmt: skip

    def _sequence_batches(
        self, envs_per_batch: int, generator: torch.Generator | None
    ) -> Iterator[RolloutBatch]:
        assert self.initial_state is not None
        h0, c0 = self.initial_state
        perm = torch.randperm(self.n_envs, generator=generator)
        for env_idx in perm.to(self.device).split(envs_per_batch):
            yield RolloutBatch(
                self.obs[:, env_idx], self.actions[:, env_idx], self.masks[:, env_idx],
                self.log_probs[:, env_idx], self.values[:, env_idx],
                self.advantages[:, env_idx], self.returns[:, env_idx],
                self.episode_starts[:, env_idx], (h0[:, env_idx], c0[:, env_idx]),
            )  # fmt: skip

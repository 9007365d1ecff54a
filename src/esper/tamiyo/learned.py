"""The learned controller: a trained ``policy.pt`` behind the same ``Policy`` protocol as the heuristic.

Actions are chosen head by head under :meth:`JointLegality.conditional_mask` (op; then slot
given the op; then blueprint, style, tempo and alpha target given both), so the policy only
ever picks jointly legal actions, and the mask that produced each head is recorded with the
action: PPO recomputes the exact log-probabilities from it (:func:`select_actions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esper.errors import CheckpointError
from esper.leyline.actions import Action
from esper.leyline.observation import Observation
from esper.tamiyo.features import feature_size, observation_features
from esper.tamiyo.masks import ActionLayout, JointLegality
from esper.tamiyo.policy_net import FactoredPolicy, load_policy

__all__ = ["LearnedPolicy", "select_actions"]


@torch.no_grad()
def select_actions(
    policy: FactoredPolicy,
    obs: Tensor,
    legality: Sequence[JointLegality],
    *,
    deterministic: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pick one jointly legal action per environment.

    Args:
        policy: a feed-forward :class:`FactoredPolicy`.
        obs: ``[B, obs_dim]`` features.
        legality: the exact legality of each of the ``B`` states.
        deterministic: most likely entry of each head instead of sampling.

    Returns:
        ``(actions [B, n_heads] long, masks [B, mask_dim] bool, log_prob [B], value [B])``;
        ``masks`` is the composite mask each head was drawn under (store it in the rollout).
    """
    union = torch.as_tensor(np.stack([leg.flat_mask() for leg in legality]), device=obs.device)
    first, _, _, _ = policy.act(obs, union, deterministic=deterministic)
    ops = first[:, 0].tolist()
    by_op = np.stack([leg.conditional_mask(op) for leg, op in zip(legality, ops, strict=True)])
    second, _, _, _ = policy.act(obs, torch.as_tensor(by_op, device=obs.device), deterministic=deterministic)
    slots = second[:, 1].tolist()
    full = np.stack([leg.conditional_mask(op, s) for leg, op, s in zip(legality, ops, slots, strict=True)])
    masks = torch.as_tensor(full, device=obs.device)
    actions, _, _, _ = policy.act(obs, masks, deterministic=deterministic)
    actions[:, 0], actions[:, 1] = first[:, 0], second[:, 1]
    log_prob, _, value, _ = policy.evaluate(obs, actions, masks)
    return actions, masks, log_prob, value


class LearnedPolicy:
    """A trained :class:`FactoredPolicy` as a controller (``decide(observation) -> Action``).

    Args:
        policy: the network, or a path to a ``policy.pt``.
        deterministic: take the most likely legal action (default) instead of sampling.
        seed: seed of the sampling generator (when not deterministic).

    Raises:
        CheckpointError: the file is not a policy, or (at the first decision) the run's
            observation size or action heads differ from those the policy was trained for.
    """

    name = "policy"

    def __init__(
        self, policy: FactoredPolicy | str | Path, *, deterministic: bool = True, seed: int = 0
    ) -> None:
        self.source = str(policy) if not isinstance(policy, FactoredPolicy) else "<in-memory>"
        self.net = load_policy(policy) if not isinstance(policy, FactoredPolicy) else policy
        if self.net.use_lstm:
            raise CheckpointError(
                f"policy {self.source} is recurrent; LearnedPolicy runs feed-forward policies"
            )
        self.net.eval()
        self.deterministic = deterministic
        self.generator = torch.Generator().manual_seed(seed)

    def check_fits(self, obs: Observation) -> ActionLayout:
        """The observation's action layout, after checking the policy was trained for it."""
        layout = ActionLayout.from_observation(obs)
        dim = feature_size(len(obs.slots), len(obs.blueprints))
        if dim != self.net.obs_dim:
            raise CheckpointError(
                f"policy {self.source} was trained for {self.net.obs_dim} observation features but this "
                f"run gives {dim} ({len(obs.slots)} slots, {len(obs.blueprints)} blueprints); train a "
                f"policy with the same slots and blueprints, or run with those it was trained on"
            )
        if layout.head_sizes != self.net.head_sizes:
            raise CheckpointError(
                f"policy {self.source} has action heads {self.net.head_sizes} but this run needs "
                f"{layout.head_sizes}; the slot count or blueprint catalogue differs"
            )
        return layout

    def decide(self, observation: Observation) -> Action:
        layout = self.check_fits(observation)
        features = torch.as_tensor(observation_features(observation)).unsqueeze(0)
        legality = JointLegality.from_observation(observation)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            actions, _, _, _ = select_actions(
                self.net, features, [legality], deterministic=self.deterministic
            )
            self.generator.set_state(torch.get_rng_state())
        return layout.decode(actions[0].numpy())

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])

"""The learned controller: a trained ``policy.pt`` behind the same ``Policy`` protocol as the heuristic.

Actions are chosen head by head under :meth:`JointLegality.conditional_mask` (op; then slot
given the op; then blueprint, style, tempo and alpha target given both), so the policy only
ever picks jointly legal actions, and the mask that produced each head is recorded with the
action: PPO recomputes the exact log-probabilities from it (:func:`select_actions`).

A recurrent policy (``lstm=True``) steps its LSTM once per observation: the three head draws
and the log-prob all start from the same ``(h, c)`` and see the same episode-start reset, so
PPO's sequence replay (:meth:`FactoredPolicy.evaluate`) reproduces the rollout's log-probs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from esper.errors import CheckpointError
from esper.leyline.actions import Action
from esper.leyline.observation import Observation
from esper.tamiyo.features import feature_size, observation_features, observation_layout
from esper.tamiyo.masks import ActionLayout, JointLegality
from esper.tamiyo.policy_net import FactoredPolicy, LSTMState, load_policy

__all__ = ["LearnedPolicy", "Selection", "select_actions"]


class Selection(NamedTuple):
    """What :func:`select_actions` chose for ``B`` environments (fp32 log-prob and value)."""

    actions: Tensor  # (B, n_heads) long
    masks: Tensor  # (B, mask_dim) bool: the composite mask each head was drawn under
    log_prob: Tensor  # (B,)
    value: Tensor  # (B,)
    state: LSTMState | None  # LSTM state after this step; None for a feed-forward policy


@torch.no_grad()
def select_actions(
    policy: FactoredPolicy,
    obs: Tensor,
    legality: Sequence[JointLegality],
    *,
    deterministic: bool = False,
    state: LSTMState | None = None,
    episode_starts: Tensor | None = None,
) -> Selection:
    """Pick one jointly legal action per environment.

    Args:
        policy: a :class:`FactoredPolicy`, feed-forward or recurrent.
        obs: ``[B, obs_dim]`` features.
        legality: the exact legality of each of the ``B`` states.
        deterministic: most likely entry of each head instead of sampling.
        state: recurrent policy only: the LSTM state before this step (None: zeros).
        episode_starts: recurrent policy only: ``[B]``, 1 where ``obs`` starts an episode
            (that environment's state is zeroed first). Ignored by a feed-forward policy.

    Returns:
        A :class:`Selection`; store ``masks`` in the rollout, and feed ``state`` to the next
        step of a recurrent policy.
    """
    with torch.no_grad():
        # The trunk (and the LSTM, one step) runs once; only the small heads run per draw.
        features, new_state = policy.step_features(obs, state, episode_starts if policy.use_lstm else None)

        def draw(masks: np.ndarray) -> Tensor:
            mask = torch.as_tensor(masks, device=obs.device)
            return policy.act_features(features, mask, deterministic)[0]

        first = draw(np.stack([leg.flat_mask() for leg in legality]))
        ops = first[:, 0].tolist()
        second = draw(np.stack([leg.conditional_mask(op) for leg, op in zip(legality, ops, strict=True)]))
        slots = second[:, 1].tolist()
        full = np.stack(
            [leg.conditional_mask(op, s) for leg, op, s in zip(legality, ops, slots, strict=True)]
        )
        actions = draw(full)
        actions[:, 0], actions[:, 1] = first[:, 0], second[:, 1]
        masks = torch.as_tensor(full, device=obs.device)
        log_prob, _, value, _ = policy.score_features(features, actions, masks)
    return Selection(actions, masks, log_prob, value, new_state)


class LearnedPolicy:
    """A trained :class:`FactoredPolicy` as a controller (``decide(observation) -> Action``).

    A recurrent policy keeps its LSTM state from one ``decide()`` to the next. Within a run
    the observation's epoch strictly increases, so the rule is: **an observation whose epoch
    is not after the last one decided starts a new run** (the state is zeroed first, as at an
    episode start in training). The first decision is always such a start. The state and the
    last epoch are part of :meth:`state_dict`, so a resumed run (or the engine's rollback to
    its last good epoch) continues with the state it had.

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
        self.net.eval()
        self.deterministic = deterministic
        self.generator = torch.Generator().manual_seed(seed)
        self.lstm_state: LSTMState | None = None  # (h, c), each (1, 1, lstm_hidden)
        self.last_epoch: int | None = None  # epoch of the last decision; None before the first

    def check_fits(self, obs: Observation) -> ActionLayout:
        """The observation's action layout, after checking the policy was trained for it."""
        layout = ActionLayout.from_observation(obs)
        ours = observation_layout([s.slot_id for s in obs.slots], obs.blueprints)
        if self.net.layout is not None and self.net.layout != ours:
            raise CheckpointError(
                f"policy {self.source} was trained for the observation layout {_describe(self.net.layout)}, "
                f"but this run's is {_describe(ours)}; train a policy for this layout (esper train ppo) "
                f"or run with the slots and blueprints it was trained on"
            )
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

    def starts_run(self, observation: Observation) -> bool:
        """True when ``observation`` begins a new run (its epoch is not after the last one)."""
        return self.last_epoch is None or observation.epoch <= self.last_epoch

    def decide(self, observation: Observation) -> Action:
        layout = self.check_fits(observation)
        features = torch.as_tensor(observation_features(observation)).unsqueeze(0)
        legality = JointLegality.from_observation(observation)
        start = torch.tensor([float(self.starts_run(observation))])
        state = self.lstm_state if self.net.use_lstm else None
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            chosen = select_actions(
                self.net,
                features,
                [legality],
                deterministic=self.deterministic,
                state=state,
                episode_starts=start,
            )
            self.generator.set_state(torch.get_rng_state())
        self.lstm_state, self.last_epoch = chosen.state, int(observation.epoch)
        return layout.decode(chosen.actions[0].numpy())

    def state_dict(self) -> dict[str, Any]:
        """Sampling generator, last decided epoch and (recurrent policy) the LSTM ``h``/``c``."""
        state: dict[str, Any] = {"generator": self.generator.get_state(), "last_epoch": self.last_epoch}
        if self.lstm_state is not None:
            state["lstm_h"], state["lstm_c"] = (t.clone() for t in self.lstm_state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self.last_epoch = state.get("last_epoch")
        has_state = "lstm_h" in state and "lstm_c" in state
        self.lstm_state = (state["lstm_h"].clone(), state["lstm_c"].clone()) if has_state else None


def _describe(layout: dict[str, Any]) -> str:
    return (
        f"(slots {layout.get('slots')}, blueprints {layout.get('blueprints')}, "
        f"features v{layout.get('features')})"
    )

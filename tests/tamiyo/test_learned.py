"""LearnedPolicy: the Policy protocol over a policy.pt, legal actions only, size mismatch errors."""

from __future__ import annotations

import pytest
import torch

from esper.errors import CheckpointError
from esper.leyline.observation import Observation, Policy, SlotObservation
from esper.leyline.stages import SeedStage
from esper.tamiyo.learned import LearnedPolicy
from esper.tamiyo.masks import ActionLayout, is_legal
from esper.tamiyo.policy_net import FactoredPolicy, save_policy

BLUEPRINTS = ("noop", "norm", "conv_small")


def make_obs(stages=(SeedStage.DORMANT, SeedStage.TRAINING), loss=1.0, acc=0.5, contribution=0.1, **kw):
    slots = tuple(
        SlotObservation(
            slot_id=f"r0c{i}", channels=4, stage=s,
            blueprint=None if s == SeedStage.DORMANT else "norm",
            contribution=None if s == SeedStage.DORMANT else contribution,
            seed_params=0 if s == SeedStage.DORMANT else 10,
            gate_ready=s == SeedStage.TRAINING,
        )
        for i, s in enumerate(stages)
    )  # fmt: skip
    base = dict(
        epoch=2, max_epochs=10, topology="cnn", train_loss=loss, train_accuracy=acc, val_loss=loss,
        val_accuracy=acc, val_accuracy_history=(0.1, 0.3, acc), train_loss_history=(2.0, 1.5, loss),
        host_params=100, seed_params=10, max_seed_params=None, slots=slots, blueprints=BLUEPRINTS,
        blueprint_params={s.slot_id: {b: 5 for b in BLUEPRINTS} for s in slots},
    )  # fmt: skip
    base.update(kw)
    return Observation(**base)


def _policy(obs):
    layout = ActionLayout.from_observation(obs)
    from esper.tamiyo.features import observation_features

    torch.manual_seed(0)
    return FactoredPolicy(observation_features(obs).shape[0], layout.head_sizes, hidden=16)


@pytest.mark.parametrize("deterministic", [True, False])
def test_decides_only_legal_actions(tmp_path, deterministic):
    obs = make_obs()
    save_policy(_policy(obs), tmp_path / "policy.pt")
    ctl = LearnedPolicy(tmp_path / "policy.pt", deterministic=deterministic, seed=1)
    assert isinstance(ctl, Policy)
    layout = ActionLayout.from_observation(obs)
    for _ in range(30):
        action = ctl.decide(obs)
        assert is_legal(obs, layout.encode(action))
    ctl.load_state_dict(ctl.state_dict())


def test_other_observation_size_is_a_clear_error(tmp_path):
    save_policy(_policy(make_obs()), tmp_path / "policy.pt")
    ctl = LearnedPolicy(tmp_path / "policy.pt")
    with pytest.raises(CheckpointError, match="observation features"):
        ctl.decide(make_obs(stages=(make_obs().slots[0].stage,) * 3))

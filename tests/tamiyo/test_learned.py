"""LearnedPolicy: the Policy protocol over a policy.pt, legal actions only, size mismatch errors,
and a recurrent policy's state across decisions (kept within a run, reset at a new one,
checkpointed)."""

from __future__ import annotations

import pytest
import torch
from obs_kit import make_obs

from esper.errors import CheckpointError
from esper.leyline.observation import Policy
from esper.leyline.stages import SeedStage
from esper.tamiyo.features import observation_features
from esper.tamiyo.learned import LearnedPolicy, select_actions
from esper.tamiyo.masks import ActionLayout, JointLegality, is_legal
from esper.tamiyo.policy_net import FactoredPolicy, save_policy


def _policy(obs, **kw):
    layout = ActionLayout.from_observation(obs)
    torch.manual_seed(0)
    return FactoredPolicy(observation_features(obs).shape[0], layout.head_sizes, hidden=16, **kw)


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


def _lstm_controller(tmp_path, **kw):
    if not (tmp_path / "lstm.pt").exists():
        save_policy(_policy(make_obs(), lstm=True, lstm_hidden=8), tmp_path / "lstm.pt")
    return LearnedPolicy(tmp_path / "lstm.pt", **kw)


def _state(ctl):
    assert ctl.lstm_state is not None
    return torch.cat(ctl.lstm_state).clone()


def test_recurrent_state_kept_within_a_run_and_reset_at_a_new_one(tmp_path):
    ctl = _lstm_controller(tmp_path)
    ctl.decide(make_obs(epoch=0))
    first = _state(ctl)
    ctl.decide(make_obs(epoch=1))
    assert not torch.equal(_state(ctl), first)  # carried over and stepped
    ctl.decide(make_obs(epoch=0))  # epoch went backwards: a new run, from a zero state
    assert torch.equal(_state(ctl), first)
    ctl.decide(make_obs(epoch=0))  # the same epoch again is a new run too
    assert torch.equal(_state(ctl), first)


def test_recurrent_state_round_trips_through_a_checkpoint(tmp_path):
    ctl = _lstm_controller(tmp_path, deterministic=False, seed=3)
    for epoch in range(3):
        ctl.decide(make_obs(epoch=epoch))
    path = tmp_path / "controller.pt"
    torch.save(ctl.state_dict(), path)
    restored = _lstm_controller(tmp_path, deterministic=False)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.last_epoch == 2 and torch.equal(_state(restored), _state(ctl))
    layout = ActionLayout.from_observation(make_obs())
    for epoch in range(3, 6):  # the same sampled actions and states as the original
        obs = make_obs(epoch=epoch)
        assert (layout.encode(ctl.decide(obs)) == layout.encode(restored.decide(obs))).all()
        assert torch.equal(_state(restored), _state(ctl))


def test_feed_forward_controller_has_no_recurrent_state(tmp_path):
    save_policy(_policy(make_obs()), tmp_path / "policy.pt")
    ctl = LearnedPolicy(tmp_path / "policy.pt")
    ctl.decide(make_obs(epoch=0))
    assert ctl.lstm_state is None and "lstm_h" not in ctl.state_dict()


def test_recurrent_selection_is_replayed_by_evaluate():
    # Two environments, four steps, the second starting a new episode at step 2: evaluating
    # the whole sequence from the initial state gives back the log-probs of the rollout.
    observations = [make_obs(epoch=0), make_obs(stages=(SeedStage.TRAINING, SeedStage.DORMANT), epoch=0)]
    policy = _policy(observations[0], lstm=True, lstm_hidden=8)
    legality = [JointLegality.from_observation(o) for o in observations]
    state = policy.initial_state(2)
    starts = torch.ones(2)
    seq = {"obs": [], "actions": [], "masks": [], "log_prob": [], "starts": []}
    for t in range(4):
        obs = torch.stack([torch.as_tensor(observation_features(o)) for o in observations]) + 0.1 * t
        chosen = select_actions(policy, obs, legality, state=state, episode_starts=starts)
        for key, value in zip(seq, (obs, chosen.actions, chosen.masks, chosen.log_prob, starts), strict=True):
            seq[key].append(value)
        state, starts = chosen.state, torch.tensor([0.0, float(t == 1)])
    stacked = {key: torch.stack(values) for key, values in seq.items()}  # (T, B, ...)
    log_prob, _, _, _ = policy.evaluate(stacked["obs"], stacked["actions"], stacked["masks"],
                                        policy.initial_state(2), stacked["starts"])  # fmt: skip
    torch.testing.assert_close(log_prob, stacked["log_prob"], rtol=0, atol=1e-5)


def test_a_policy_for_another_layout_is_refused_with_both_layouts_named(tmp_path):
    obs = make_obs()
    layout = ActionLayout.from_observation(obs)
    other = {"slots": ["r0c0", "r0c1"], "blueprints": ["noop", "norm", "widen"], "features": 2}
    net = FactoredPolicy(observation_features(obs).shape[0], layout.head_sizes, hidden=8, layout=other)
    save_policy(net, tmp_path / "policy.pt")
    ctl = LearnedPolicy(tmp_path / "policy.pt")
    with pytest.raises(
        CheckpointError,
        match=r"trained for the observation layout \(slots \['r0c0', 'r0c1'\], "
        r"blueprints \['noop', 'norm', 'widen'\], features v2\), but this run's is .*'conv_small'",
    ):
        ctl.decide(obs)

"""A tiny PPO run writes a loadable policy and resumes after a kill; MaskablePPO interop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from esper.errors import CheckpointError, ConfigError
from esper.simic.env import MorphogenesisEnv
from esper.simic.training import PPO_CHECKPOINT, PPORunConfig, train_ppo
from esper.tamiyo.policy_net import load_policy

pytestmark = pytest.mark.slow


def _config(out, rounds=2):
    return PPORunConfig(rounds=rounds, envs=2, episode_length=3, out=str(out), quiet=True, minibatch_size=6)


def test_tiny_run_then_resume(tmp_path):
    summary = train_ppo(_config(tmp_path, rounds=1))
    assert summary["rounds"] == 1
    blob = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert blob["config"]["obs_dim"] == load_policy(tmp_path / "policy.pt").obs_dim
    with pytest.raises(ConfigError, match="already holds"):
        train_ppo(_config(tmp_path, rounds=2))
    with pytest.raises(ConfigError, match="different settings"):
        train_ppo(
            PPORunConfig(rounds=2, envs=2, episode_length=4, out=str(tmp_path), quiet=True), resume=True
        )
    summary = train_ppo(_config(tmp_path, rounds=2), resume=True)  # continues at round 1
    assert summary["rounds"] == 2
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    updates = [e for e in events if e["event"] == "ppo_update"]
    assert [e["round"] for e in updates] == [0, 1]
    for key in ("policy_loss", "value_loss", "entropy/op", "approx_kl", "clipfrac", "explained_variance",
                "steps_per_s", "mean_return", "final_accuracy"):  # fmt: skip
        assert key in updates[-1]["metrics"]
    assert updates[-1]["metrics"]["illegal_rate"] == 0.0  # conditional masks: only legal actions
    assert abs(updates[-1]["metrics"]["ratio_start_dev"]) < 1e-5


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=PPO_CHECKPOINT):
        train_ppo(_config(tmp_path), resume=True)


def test_maskable_ppo_interop():
    sb3_contrib = pytest.importorskip(
        "sb3_contrib", reason="sb3-contrib is not installed (pip install sb3-contrib)"
    )
    env = MorphogenesisEnv(episode_length=4, seed=0)
    model = sb3_contrib.MaskablePPO(
        "MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu"
    )  # a few hundred steps are ~1 min here
    model.learn(total_timesteps=64)
    obs, _ = env.reset(seed=5)
    action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
    assert np.asarray(action).shape == env.action_space.shape

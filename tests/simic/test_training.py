"""A tiny PPO run (feed-forward and LSTM) writes a loadable policy and resumes after a kill;
the learned policy drives an engine run; MaskablePPO interop."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from esper.errors import CheckpointError, ConfigError
from esper.nissa.telemetry import MemorySink
from esper.recipes.ppo import run_ppo
from esper.recipes.train import run_training
from esper.simic.env import MorphogenesisEnv
from esper.simic.training import PPO_CHECKPOINT, PPORunConfig
from esper.tamiyo.learned import LearnedPolicy
from esper.tamiyo.policy_net import load_policy
from esper.tolaria.checkpoint import load_checkpoint
from esper.tolaria.config import RunConfig

pytestmark = pytest.mark.slow


def _config(out, rounds=2, **kw):
    kw.setdefault("minibatch_size", 6)
    return PPORunConfig(rounds=rounds, envs=2, episode_length=3, out=str(out), quiet=True, **kw)


def test_tiny_run_then_resume(tmp_path):
    summary = run_ppo(_config(tmp_path, rounds=1))
    assert summary["rounds"] == 1
    blob = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert blob["config"]["obs_dim"] == load_policy(tmp_path / "policy.pt").obs_dim
    with pytest.raises(ConfigError, match="already holds"):
        run_ppo(_config(tmp_path, rounds=2))
    with pytest.raises(ConfigError, match="different settings"):
        run_ppo(
            PPORunConfig(rounds=2, envs=2, episode_length=4, out=str(tmp_path), quiet=True), resume=True
        )
    summary = run_ppo(_config(tmp_path, rounds=2), resume=True)  # continues at round 1
    assert summary["rounds"] == 2
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    updates = [e for e in events if e["event"] == "ppo_update"]
    assert [e["round"] for e in updates] == [0, 1]
    for key in ("policy_loss", "value_loss", "entropy/op", "approx_kl", "clipfrac", "explained_variance",
                "steps_per_s", "mean_return", "final_accuracy"):  # fmt: skip
        assert key in updates[-1]["metrics"]
    assert updates[-1]["metrics"]["illegal_rate"] == 0.0  # conditional masks: only legal actions
    assert abs(updates[-1]["metrics"]["ratio_start_dev"]) < 1e-5


def test_lstm_run_resume_and_engine_run(tmp_path):
    # minibatch_size=3 with 3-step episodes: one environment per minibatch, so the update
    # replays each sequence in a batch of its own, not as the rollout batched them.
    config = _config(tmp_path / "ppo", rounds=1, lstm=True, lstm_hidden=8, minibatch_size=3)
    sink = MemorySink()
    run_ppo(config, extra_sinks=[sink])
    with pytest.raises(ConfigError, match="lstm: saved True, given False"):
        run_ppo(_config(tmp_path / "ppo", rounds=2, minibatch_size=3), resume=True)
    summary = run_ppo(dataclasses.replace(config, rounds=2), resume=True, extra_sinks=[sink])
    assert summary["rounds"] == 2
    updates = [e.metrics for e in sink.events if e.EVENT == "ppo_update"]
    assert len(updates) == 2
    for metrics in updates:  # the update's replay reproduces the rollout's log-probs
        assert abs(metrics["ratio_start_dev"]) < 1e-5
        assert metrics["illegal_rate"] == 0.0
    assert load_checkpoint(tmp_path / "ppo" / PPO_CHECKPOINT)["policy_config"]["lstm"] is True

    blob = torch.load(tmp_path / "ppo" / "policy.pt", weights_only=True)
    assert blob["config"]["lstm"] is True and blob["config"]["lstm_hidden"] == 8
    controller = LearnedPolicy(tmp_path / "ppo" / "policy.pt")
    run = RunConfig(task="digits-impaired", epochs=3, seed=3, quiet=True, out=str(tmp_path / "run"),
                    controller="policy", policy=str(tmp_path / "ppo" / "policy.pt"))  # fmt: skip
    assert run_training(run, controller)["epochs"] == 3
    saved = load_checkpoint(tmp_path / "run")["controller"]
    assert saved["last_epoch"] == 2 and saved["lstm_h"].shape == (1, 1, 8)
    assert controller.lstm_state is not None
    assert torch.equal(saved["lstm_h"], controller.lstm_state[0])


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=PPO_CHECKPOINT):
        run_ppo(_config(tmp_path), resume=True)


def test_maskable_ppo_interop():
    sb3_contrib = pytest.importorskip(
        "sb3_contrib", reason="sb3-contrib is not installed (pip install sb3-contrib)"
    )
    env = MorphogenesisEnv(episode_length=4, seed=0)
    model = sb3_contrib.MaskablePPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu"
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)  # 256 host epochs of the tiny digits-impaired host
    assert model.num_timesteps >= 256
    after = list(model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # it updated
    obs, _ = env.reset(seed=5)
    action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
    assert np.asarray(action).shape == env.action_space.shape


def test_run_config_knobs_reach_the_ppo_trainer(tmp_path):
    cfg = _config(tmp_path, rounds=7, ent_coef=0.05, ent_coef_final=0.0, clip_vloss=False, target_kl=0.02)
    ppo = cfg.ppo_config()
    assert (ppo.ent_coef, ppo.ent_coef_final, ppo.ent_anneal_updates) == (0.05, 0.0, 7)
    assert ppo.clip_vloss is False and ppo.target_kl == 0.02
    assert _config(tmp_path).ppo_config().ent_anneal_updates == 0  # constant by default
    with pytest.raises(ConfigError, match="amp"):
        _config(tmp_path, amp="fp8")

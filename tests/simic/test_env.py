"""MorphogenesisEnv: Gymnasium contract, masks, illegal actions, errors, vectorisation."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import esper.simic  # noqa: F401  (registers the env id)
from esper.errors import CheckpointError, ConfigError, ShapeError
from esper.leyline.actions import LifecycleOp
from esper.recipes.train import run_training
from esper.simic.env import MorphogenesisEnv
from esper.tamiyo.simple import StaticPolicy
from esper.tolaria.checkpoint import load_grown
from esper.tolaria.config import RunConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env():
    e = MorphogenesisEnv(task="digits-impaired", episode_length=3)
    yield e
    e.close()


def test_check_env(env):
    check_env(env, skip_render_check=True)


def test_registered_id():
    e = gym.make("esper/Morphogenesis-v0", episode_length=2)
    assert isinstance(e.unwrapped, MorphogenesisEnv)


def test_step_before_reset_and_bad_actions():
    e = MorphogenesisEnv(episode_length=2)
    with pytest.raises(gym.error.ResetNeeded):
        e.step(np.zeros(6, dtype=np.int64))
    with pytest.raises(gym.error.ResetNeeded):
        e.action_masks()
    e.reset(seed=0)
    with pytest.raises(ShapeError, match="one per head"):
        e.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ShapeError, match="integers"):
        e.step(np.full(6, 0.5))
    with pytest.raises(ShapeError, match="out of range"):
        e.step(np.array([7, 0, 0, 0, 0, 0]))


def test_illegal_action_is_a_penalised_noop_and_episode_ends(env):
    obs, info = env.reset(seed=3)
    mask = env.action_masks()
    assert mask.dtype == bool and mask.shape == (int(env.action_space.nvec.sum()),)
    before = [s.stage for s in env.observation.slots]
    obs, _reward, term, trunc, info = env.step(np.array([LifecycleOp.FOSSILIZE, 0, 0, 0, 0, 0]))
    assert info["illegal_action"] and info["reward_components"]["illegal"] < 0
    assert [s.stage for s in env.observation.slots] == before
    assert env.observation_space.contains(obs)
    obs, _reward, term, trunc, info = env.step(np.array([LifecycleOp.GERMINATE, 0, 1, 0, 0, 0]))
    assert not info["illegal_action"]
    assert "seed_germinated" in [e["event"] for e in info["events"]]
    assert set(info["epoch_metrics"]) >= {"val_accuracy", "train_loss"}
    obs, _reward, term, trunc, info = env.step(np.zeros(6, dtype=np.int64))
    assert term and not trunc and "final_accuracy" in info
    with pytest.raises(gym.error.ResetNeeded, match="ended"):
        env.step(np.zeros(6, dtype=np.int64))


def test_async_vector_env():
    fns = [partial(MorphogenesisEnv, episode_length=2) for _ in range(2)]
    vec = gym.vector.AsyncVectorEnv(fns, context="spawn")
    try:
        obs, _info = vec.reset(seed=[0, 1])
        assert obs.shape == (2, *vec.single_observation_space.shape)
        for _ in range(2):
            obs, reward, term, _trunc, _info = vec.step(np.zeros((2, 6), dtype=np.int64))
        assert term.all() and np.isfinite(reward).all()
    finally:
        vec.close()


def test_reset_can_start_from_a_pretrained_host(tmp_path):
    config = RunConfig(
        task="digits-impaired", controller="static", epochs=20, quiet=True, out=str(tmp_path / "pre")
    )
    summary = run_training(config, StaticPolicy())  # a host trained for 20 epochs
    grown = load_grown(summary["run_dir"])
    pretrained = {k: v.detach().clone() for k, v in grown.host.named_parameters()}

    fresh = MorphogenesisEnv(task="digits-impaired", episode_length=2)
    warm = MorphogenesisEnv(task="digits-impaired", episode_length=2, host_checkpoint=str(tmp_path / "pre"))
    _, fresh_info = fresh.reset(seed=3)
    _, warm_info = warm.reset(seed=3)
    # reset trains one epoch on top of the loaded host: it starts far ahead of a fresh one
    assert warm_info["epoch_metrics"]["val_accuracy"] > fresh_info["epoch_metrics"]["val_accuracy"] + 0.2
    now = dict(warm.engine.model.host.named_parameters())
    moved = max((now[k] - v).abs().max().item() for k, v in pretrained.items())
    assert moved < 0.3  # one epoch of fine-tuning moves it ~0.05; a fresh init is ~1.5 away

    other = MorphogenesisEnv(task="digits", episode_length=2, host_checkpoint=str(tmp_path / "pre"))
    with pytest.raises(CheckpointError, match="does not fit"):
        other.reset(seed=0)  # an 8-channel host cannot take the 2-channel weights


def test_an_episode_length_set_at_reset_runs_that_many_steps_with_the_lifecycle_reward():
    env = MorphogenesisEnv(task="digits-impaired", episode_length=5, reward="lifecycle")
    env.reset(seed=0, options={"episode_length": 2})
    assert env.engine is not None and env.engine.config.epochs == 3
    for step in range(2):
        _, _, terminated, _, info = env.step(np.zeros(6, dtype=np.int64))
        assert terminated == (step == 1) and set(info["reward_components"]) >= {"fossil", "final", "rent"}
    assert info["reward_components"]["final"] > 0
    env.reset(seed=1)  # back to the env's own length
    assert env.engine.config.epochs == 6
    with pytest.raises(ConfigError, match="episode_length"):
        env.reset(seed=1, options={"episode_length": 0})

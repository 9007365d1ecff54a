"""MorphogenesisEnv: Gymnasium contract, masks, illegal actions, errors, vectorisation."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import esper.simic  # noqa: F401  (registers the env id)
from esper.errors import ShapeError
from esper.leyline.actions import LifecycleOp
from esper.simic.env import MorphogenesisEnv

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

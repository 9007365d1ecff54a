"""The Ray backend of PPO training: the same rollouts as the local sync (and subprocess) backend,
dead actors restarted with their episode redone, and bad input refused before anything is written.

Tests that need Ray start one local runtime for the module (2 logical CPUs, no dashboard) and
skip, saying why, only where Ray cannot be imported."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import esper
from esper.errors import BackendError, ConfigError
from esper.leyline.events import ActorRestarted
from esper.recipes.ppo import run_ppo
from esper.simic import training
from esper.simic.env import MorphogenesisEnv
from esper.simic.training import PPORunConfig

pytestmark = pytest.mark.slow

TINY = {"task": "digits-impaired", "episode_length": 2, "envs": 2, "rounds": 1, "minibatch_size": 4}
TIMING_KEYS = {"env_time_s", "policy_time_s", "update_time_s", "steps_per_s", "controller_overhead"}


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'esper[ray]')")
    src = str(Path(esper.__file__).resolve().parents[1])
    with pytest.MonkeyPatch.context() as mp:  # actors import this checkout's esper, as the driver does
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        try:
            yield ray
        finally:
            ray.shutdown()


def _run(out: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    """Train ``TINY``; the summary and, per round, the rollout the PPO update saw."""
    rollouts: list[dict[str, torch.Tensor]] = []
    update = training.PPOTrainer.update

    def recording(self: Any, buffer: Any) -> dict[str, Any]:
        rollouts.append({k: getattr(buffer, k).clone() for k in ("obs", "actions", "rewards", "masks")})
        return update(self, buffer)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.PPOTrainer, "update", recording)
        summary = run_ppo(PPORunConfig(out=str(out), quiet=True, **{**TINY, **kw}))
    return summary, rollouts


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, torch.Tensor]]]:
    torch.set_num_threads(1)  # as in each actor: CPU reductions can differ across thread counts
    out = tmp_path_factory.mktemp("local")
    return out, _run(out, vector="sync")[1]


def _assert_same_run(out: Path, rollouts: list[dict[str, torch.Tensor]], local: tuple[Path, Any]) -> None:
    local_out, local_rollouts = local
    assert len(rollouts) == len(local_rollouts) == 1
    for key, value in local_rollouts[0].items():  # observations, actions, rewards, masks
        assert torch.equal(rollouts[0][key], value), key
    mine = torch.load(out / "policy.pt", weights_only=True)["state_dict"]
    theirs = torch.load(local_out / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # the same update
    histories = [torch.load(d / training.PPO_CHECKPOINT, weights_only=True)["history"]
                 for d in (out, local_out)]  # fmt: skip
    mine, theirs = ([{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in hs] for hs in histories)
    assert mine == theirs


def _events(out: Path, name: str) -> list[dict[str, Any]]:
    lines = (out / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def test_same_rollouts_as_the_local_sync_backend(ray_runtime, local_run, tmp_path):
    summary, rollouts = _run(tmp_path, backend="ray")
    assert summary["rounds"] == 1
    _assert_same_run(tmp_path, rollouts, local_run)
    assert _events(tmp_path, "actor_restarted") == []
    assert ray_runtime.is_initialized()  # a runtime the run did not start is left running


def test_subprocess_backend_gives_the_same_rollouts_too(local_run, tmp_path):
    # Each in-process env has its own RNG streams, as a subprocess (or an actor) has.
    _, rollouts = _run(tmp_path, vector="async")
    _assert_same_run(tmp_path, rollouts, local_run)


def test_a_killed_actor_is_restarted_and_its_episode_redone(ray_runtime, local_run, tmp_path):
    step = training.RayVectorEnv.step
    calls = []

    def kill_first_actor_before_second_step(self: Any, actions: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # mid-round: the actor has done the reset and step 1
            ray_runtime.kill(self.actors[0])
        return step(self, actions)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.RayVectorEnv, "step", kill_first_actor_before_second_step)
        _, rollouts = _run(tmp_path, backend="ray")
    _assert_same_run(tmp_path, rollouts, local_run)  # the restart does not change the run
    (event,) = _events(tmp_path, "actor_restarted")
    assert (event["round"], event["env"], event["step"], event["attempt"]) == (0, 0, 2, 1)
    assert event["seed"] == training._episode_seeds(PPORunConfig(**TINY), 0)[0]
    assert "died" in event["reason"]


class CrashingEnv(MorphogenesisEnv):
    """Kills its own process at step ``at`` while the marker file does not exist (then writes it)."""

    def __init__(self, marker: str, at: int, always: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.marker, self.at, self.always, self.steps = Path(marker), at, always, 0

    def reset(self, **kw: Any) -> Any:
        self.steps = 0
        return super().reset(**kw)

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == self.at and (self.always or not self.marker.exists()):
            self.marker.touch()
            os._exit(3)  # a hard crash: no exception, no cleanup
        return super().step(action)


@pytest.fixture
def by_value(ray_runtime) -> Iterator[None]:
    cloudpickle = ray_runtime.cloudpickle  # Ray pickles with its own copy
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the actors cannot import this test module
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_an_env_that_crashes_is_restarted_and_replayed(ray_runtime, by_value, tmp_path):
    import gymnasium as gym

    kw = {"episode_length": 2, "task": "digits-impaired"}
    crash = partial(CrashingEnv, str(tmp_path / "crashed"), 2, **kw)
    events: list[Any] = []
    envs = training.RayVectorEnv([partial(MorphogenesisEnv, **kw), crash], emit=events.append)
    reference = gym.vector.SyncVectorEnv([partial(training._make_env, None, **kw)] * 2)
    try:
        actions = np.zeros((2, len(envs.single_action_space.nvec)), dtype=np.int64)  # WAIT
        for got, want in zip(envs.reset(seed=[5, 6]), reference.reset(seed=[5, 6]), strict=True):
            np.testing.assert_equal(got, want)
        for _ in range(2):
            for got, want in zip(envs.step(actions), reference.step(actions), strict=True):
                np.testing.assert_equal(got, want)
    finally:
        envs.close()
        reference.close()
    assert [(e.env, e.step, e.seed, e.attempt) for e in events] == [(1, 2, 6, 1)]
    assert isinstance(events[0], ActorRestarted)

    always = partial(CrashingEnv, str(tmp_path / "crashed"), 1, always=True, **kw)
    envs = training.RayVectorEnv([always], max_restarts=1)
    try:
        envs.reset(seed=1)
        with pytest.raises(BackendError, match="died 2 times in one episode"):
            envs.step(actions[:1])
    finally:
        envs.close()


def test_mismatched_esper_versions_are_refused_before_the_run_dir(ray_runtime, tmp_path, monkeypatch):
    monkeypatch.setattr(esper, "__version__", "0.0.0+driver")  # the actors still report the real one
    with pytest.raises(BackendError, match=r"driver runs esper 0\.0\.0\+driver.*env 0 on .*: esper "):
        run_ppo(PPORunConfig(out=str(tmp_path / "run"), quiet=True, backend="ray", **TINY))
    assert not (tmp_path / "run").exists()


def test_ray_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(BackendError, match=r"pip install 'esper\[ray\]'"):
        run_ppo(PPORunConfig(out=str(tmp_path / "run"), quiet=True, backend="ray", **TINY))
    assert not (tmp_path / "run").exists()


def test_backend_settings_are_validated():
    with pytest.raises(ConfigError, match=r"backend 'spark' is not one of \['local', 'ray'\]"):
        PPORunConfig(backend="spark")
    with pytest.raises(ConfigError, match=r"address '10\.0\.0\.5:6379' needs backend 'ray'"):
        PPORunConfig(address="10.0.0.5:6379")
    with pytest.raises(ConfigError, match=r"HOST:PORT.*got 'localhost'"):
        PPORunConfig(backend="ray", address="localhost")
    with pytest.raises(ConfigError, match="vector 'async' applies to backend 'local' only"):
        PPORunConfig(backend="ray", vector="async")
    config = PPORunConfig(backend="ray", address="[::1]:6379")
    assert dataclasses.replace(config, address="auto").address == "auto"
    assert {"backend", "address"} <= training.RESUMABLE  # a run may resume on the other backend

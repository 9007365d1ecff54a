"""``MorphogenesisEnv``: one host training run as a Gymnasium episode, one host epoch per step.

Timeline of an episode of ``episode_length`` steps (``episode_length + 1`` host epochs):

* ``reset(seed=...)`` builds a fresh :class:`~esper.tolaria.engine.Engine` (host, optimizers;
  the host weights optionally from a pre-trained checkpoint), trains epoch 0 and returns the
  observation after it.
* ``step(action)`` applies the lifecycle action to the model (exactly where the engine would
  apply a controller's decision), then trains and evaluates the next epoch (counterfactual
  contributions, ``step_epoch()`` of every slot) and returns the observation after it.
  The last step ends the episode with ``terminated=True`` (the horizon is part of the task:
  ``progress`` is a feature, so the state stays Markov).

An illegal action (see :mod:`esper.tamiyo.masks`) is a no-op with a penalty and
``info["illegal_action"] = True``; a malformed action (wrong shape, non-integer, out of
range) raises :class:`~esper.errors.ShapeError`; ``step`` before ``reset`` (or after the end)
raises ``gymnasium.error.ResetNeeded``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from esper._gym import ENV_ID
from esper.data import Task, get_task
from esper.errors import CheckpointError, ConfigError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.hosts import HostBase
from esper.leyline.events import Reward
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage
from esper.nissa.telemetry import MemorySink, Telemetry
from esper.simic.rewards import (
    RewardConfig,
    basic_reward,
    lifecycle_potential,
    lifecycle_reward,
    shaped_reward,
    sparse_reward,
)
from esper.tamiyo.features import FEATURE_CLIP, feature_size, observation_features
from esper.tamiyo.masks import ActionLayout, JointLegality
from esper.tolaria.build import engine_for_task
from esper.tolaria.config import RunConfig
from esper.tolaria.engine import Engine

__all__ = ["ENV_ID", "MorphogenesisEnv"]

_BLENDED = (SeedStage.BLENDING, SeedStage.HOLDING)


class MorphogenesisEnv(gym.Env[np.ndarray, np.ndarray]):
    """Grow seeds into a host while it trains; reward per :mod:`esper.simic.rewards`.

    Args:
        task: an Esper task name (``esper.data.list_tasks()``).
        episode_length: steps per episode (the host trains ``episode_length + 1`` epochs).
        slots: slot ids to expose (default: every injection point of the task's host).
        reward: ``"shaped"``, ``"sparse"`` or ``"basic"`` (or pass ``reward_config``).
        seed: default seed of the first ``reset()`` without one.
        host_checkpoint: an Esper run directory or ``checkpoint.pt`` whose host weights start
            every episode (to study growth late in training).
        reward_config: full reward settings (its ``mode`` wins over ``reward``).
        max_seed_params: parameter budget for seeds (masks GERMINATE beyond it).
        blueprints: blueprint names the blueprint head chooses from (default: all for the
            task's topology).
        run_overrides: extra :class:`RunConfig` fields (e.g. ``{"min_training_epochs": 2}``).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it an instance attribute)

    def __init__(
        self,
        task: str = "digits-impaired",
        episode_length: int = 10,
        slots: Sequence[str] | None = None,
        reward: str = "shaped",
        seed: int | None = None,
        host_checkpoint: str | None = None,
        reward_config: RewardConfig | None = None,
        max_seed_params: int | None = None,
        blueprints: Sequence[str] | None = None,
        run_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(episode_length, bool) or not isinstance(episode_length, int) or episode_length < 1:
            raise ConfigError(f"episode_length must be an int >= 1, got {episode_length!r}")
        self.reward_config = reward_config or RewardConfig(mode=reward)
        self.episode_length = self.default_length = episode_length
        self.host_checkpoint = host_checkpoint
        self._default_seed = seed
        self.base_config = RunConfig(
            task=task,
            controller="static",
            epochs=episode_length + 1,
            quiet=True,
            slots=list(slots) if slots is not None else None,
            max_seed_params=max_seed_params,
            blueprints=list(blueprints) if blueprints is not None else None,
        ).replace(**dict(run_overrides or {}))
        cfg = self.base_config
        self.task: Task = get_task(
            task, data_dir=cfg.data_dir, text_file=cfg.text_file, host_channels=cfg.host_channels
        )
        host = self.task.make_host()
        assert isinstance(host, HostBase)
        slot_ids = list(slots) if slots is not None else list(host.segment_channels)
        unknown = [s for s in slot_ids if s not in host.segment_channels]
        if unknown:
            raise ConfigError(f"unknown slots {unknown}; the {task!r} host has {list(host.segment_channels)}")
        names = tuple(blueprints) if blueprints else tuple(BlueprintRegistry.names(self.task.topology))
        self.layout = ActionLayout(tuple(slot_ids), names)
        dim = feature_size(len(slot_ids), len(names))
        self.observation_space = spaces.Box(-FEATURE_CLIP, FEATURE_CLIP, shape=(dim,), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(self.layout.nvec)
        self.engine: Engine | None = None
        self._events = MemorySink()
        self._telemetry = Telemetry([self._events])
        self._obs: Observation | None = None
        self._legal: JointLegality | None = None
        self._steps = 0
        self._base_params = 1  # the starting host's parameters (lifecycle reward's rent)

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a fresh run (host seed = ``seed``, else drawn from the env's RNG).

        ``options={"episode_length": n}`` sets this episode's length (the observation carries
        the budget, so one policy serves several); otherwise the env's ``episode_length``.
        """
        if seed is None and self._np_random is None and self._default_seed is not None:
            seed = self._default_seed
        length = (options or {}).get("episode_length", self.default_length)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"options['episode_length'] must be an int >= 1, got {length!r}")
        super().reset(seed=seed)
        run_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        self.episode_length = length
        config = self.base_config.replace(seed=run_seed, epochs=length + 1)
        self._events.events.clear()
        engine = engine_for_task(config, self.task, self._telemetry)
        if self.host_checkpoint is not None:
            _load_host(engine, self.host_checkpoint)
            engine.remember_good_state()  # the governor's rollback point includes the loaded host
        engine.train_epoch()
        self.engine, self._steps, self._base_params = engine, 0, engine.host_params
        obs = self._observe()
        info = {"epoch_metrics": dict(engine.history[-1]), "seed": run_seed, **self._legal_info()}
        self._events.events.clear()
        return observation_features(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        engine, obs, _ = self._require_running()
        vec = self.layout.check_vector(action)
        decoded = self.layout.decode(vec)
        outcome = engine.apply(decoded)  # the engine's door refuses what the masks refuse
        engine.train_epoch()
        self._steps += 1
        new_obs = self._observe()
        terminated = self._steps >= self.episode_length
        components = self._reward(obs, new_obs, terminated, illegal=not outcome.applied)
        self._telemetry.emit(Reward(epoch=engine.epoch - 1, components=components))
        info: dict[str, Any] = {
            "epoch_metrics": dict(engine.history[-1]),
            "events": [_timeless(e.to_dict()) for e in self._events.events],
            "reward_components": components,
            "illegal_action": not outcome.applied,
            "illegal_reason": outcome.reason,
            "action": decoded.to_dict(),
            **self._legal_info(),
        }
        if terminated:
            info["final_accuracy"] = engine.history[-1]["val_accuracy"]
            info["seed_params"] = engine.output_seed_params
            info["lifecycle"] = dict(engine.counters)
        self._events.events.clear()
        return observation_features(new_obs), float(components["total"]), terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Flat bool mask of the per-head legal entries (sb3-contrib MaskablePPO layout)."""
        _, _, legal = self._require_running(allow_done=True)
        return legal.flat_mask()

    def legality(self) -> JointLegality:
        """The exact (joint) legality of the current state."""
        return self._require_running(allow_done=True)[2]

    @property
    def observation(self) -> Observation:
        """The structured observation behind the last feature vector."""
        return self._require_running(allow_done=True)[1]

    # ----------------------------------------------------------------- helpers
    def _require_running(self, allow_done: bool = False) -> tuple[Engine, Observation, JointLegality]:
        if self.engine is None or self._obs is None or self._legal is None:
            raise gym.error.ResetNeeded("call env.reset() before env.step() / env.action_masks()")
        if not allow_done and self._steps >= self.episode_length:
            raise gym.error.ResetNeeded(
                f"the episode ended after {self.episode_length} steps; call env.reset() to start another"
            )
        return self.engine, self._obs, self._legal

    def _observe(self) -> Observation:
        engine = self.engine
        assert engine is not None
        self._obs = engine.observe()
        self._legal = JointLegality.from_observation(self._obs)
        return self._obs

    def _legal_info(self) -> dict[str, Any]:
        assert self._legal is not None
        return {"legal_op_slot": self._legal.op_slot.copy(), "legal_blueprint": self._legal.blueprint.copy()}

    def _reward(self, old: Observation, new: Observation, terminal: bool, illegal: bool) -> dict[str, float]:
        cfg = self.reward_config
        ratio = new.seed_params / max(new.host_params, 1)
        if cfg.mode == "sparse":
            return sparse_reward(
                cfg, final_accuracy=new.val_accuracy, param_ratio=ratio, terminal=terminal, illegal=illegal
            )
        measured = [
            s.contribution for s in new.slots if s.contribution is not None and s.stage != SeedStage.PRUNED
        ]
        if cfg.mode == "basic":
            return basic_reward(cfg, contributions=measured, param_ratio=ratio, illegal=illegal)
        if cfg.mode == "lifecycle":
            return lifecycle_reward(
                cfg,
                acc_before=old.val_accuracy,
                acc_after=new.val_accuracy,
                blended_contributions=_contributions(new, _BLENDED),
                fossilized_contributions=_contributions(new, (SeedStage.FOSSILIZED,)),
                growth=(new.host_params + new.seed_params) / max(self._base_params, 1) - 1.0,
                terminal=terminal,
                illegal=illegal,
            )
        return shaped_reward(
            cfg,
            acc_before=old.val_accuracy,
            acc_after=new.val_accuracy,
            blended_contributions=_contributions(new, _BLENDED),
            potential_before=lifecycle_potential(s.stage for s in old.slots),
            potential_after=lifecycle_potential(s.stage for s in new.slots),
            param_ratio=ratio,
            terminal=terminal,
            illegal=illegal,
        )


def _load_host(engine: Engine, path: str) -> None:
    """Start the host from a run's checkpoint (its seeds are not carried over)."""
    from esper.tolaria.checkpoint import load_grown

    grown = load_grown(path)
    try:
        engine.model.host.load_state_dict(grown.host.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(f"host checkpoint {path!r} does not fit the task's host: {exc}") from exc


def _contributions(obs: Observation, stages: tuple[SeedStage, ...]) -> list[float]:
    """Measured contributions of the slots in ``stages`` (a fossilized seed keeps its last)."""
    return [s.contribution for s in obs.slots if s.stage in stages and s.contribution is not None]


def _timeless(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its wall-clock field: a step's info is a function of seed and actions."""
    return {k: v for k, v in event.items() if k != "wall_time_s"}

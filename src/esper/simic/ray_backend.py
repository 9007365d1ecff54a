"""PPO environments as Ray actors: :class:`RayVectorEnv`, a ``gymnasium.vector.VectorEnv``.

Each environment lives in its own actor (one CPU, one torch thread) and trains its own host;
the learner stays in the driver. The vector env behaves as ``SyncVectorEnv`` does (the same
observations, rewards and info layout, ``NEXT_STEP`` autoreset), so a run gives the same
rollouts on either backend when the environments are deterministic and run with the same
torch thread count (CPU kernels may split reductions differently across thread counts).

Faults: an actor that dies (killed, out of memory, a crash in native code) is replaced by a
fresh one, which redoes the episode from the seed it started with and replays the episode's
actions up to the call that was lost, so the rollout goes on as if nothing had happened. Every
restart is reported to ``emit`` as an :class:`~esper.leyline.events.ActorRestarted` event. An
exception raised by the environment itself is not a fault: it reaches the caller with its own
type, as it would locally.

Bad input fails fast and before anything is written: Ray not installed, an address that does
not answer within a few seconds, actors that do not start, or actors that run another esper
version than the driver all raise :class:`~esper.errors.BackendError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

import esper
from esper.errors import BackendError, ConfigError
from esper.leyline.events import ActorRestarted, Event

__all__ = ["RAY_INSTALL_HINT", "RayVectorEnv", "check_address", "import_ray"]

RAY_INSTALL_HINT = "pip install 'esper[ray]'"
CONNECT_TIMEOUT_S = 5.0
"""How long a Ray address may take to accept a TCP connection before it counts as not answering."""
START_TIMEOUT_S = 120.0
"""How long the actors may take to start (a busy cluster may queue them for a while)."""
CLOSE_TIMEOUT_S = 10.0
MAX_RESTARTS = 3
"""Restarts of one environment's actor within one episode before the run gives up."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`BackendError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendError(
            f"backend 'ray' needs Ray, which is not installed ({exc}); run: {RAY_INSTALL_HINT}"
        ) from exc
    return ray


def check_address(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` address; None for ``"auto"`` or None (start locally).

    Raises:
        ConfigError: anything else.
    """
    if address is None or address == "auto":
        return None
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"address must be 'auto' or HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")
    return host.strip("[]"), int(port)


def _connect(ray: ModuleType, address: str | None, num_cpus: int) -> bool:
    """Make sure a Ray runtime is up; True when this call started (or joined) it, so it owns it.

    An already initialised runtime is used as it is. ``address=None`` starts a local one with
    ``num_cpus`` logical CPUs.
    """
    if ray.is_initialized():
        return False
    hostport = check_address(address)
    if hostport is not None:  # ray.init retries an address that does not answer for minutes
        try:
            socket.create_connection(hostport, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise BackendError(
                f"no Ray cluster answers at address {address!r} ({exc}); start one there with "
                f"'ray start --head --port {hostport[1]}', or pass --address auto or no --address"
            ) from exc
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise BackendError(f"cannot connect to a Ray cluster at address {address!r}: {exc}") from exc
    return True


def _kill(ray: ModuleType, actors: Sequence[Any]) -> None:
    """End actors now (one that is already dead is fine)."""
    for actor in actors:
        with contextlib.suppress(ray.exceptions.RayError):
            ray.kill(actor)


class _EnvWorker:
    """The body of one environment's actor: builds the env on demand and forwards calls to it."""

    def __init__(self, env_fn: Callable[[], gym.Env], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.env_fn = env_fn
        self.env: gym.Env | None = None

    def identify(self) -> dict[str, str]:
        """The esper version this actor imports and the node it runs on (checked before any work)."""
        return {"esper": esper.__version__, "node": socket.gethostname()}

    def make(self) -> tuple[gym.Space, gym.Space, dict[str, Any]]:
        """Build the environment; its observation and action spaces and metadata."""
        self.env = self.env_fn()
        return self.env.observation_space, self.env.action_space, dict(self.env.metadata)

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        assert self.env is not None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        assert self.env is not None
        return self.env.step(action)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


@dataclass
class _Episode:
    """What it takes to redo an environment's current episode: its seed and its calls so far."""

    seed: int | None
    options: dict[str, Any] | None
    actions: list[Any] = field(default_factory=list)


class RayVectorEnv(gym.vector.VectorEnv):
    """``len(env_fns)`` environments, each in a Ray actor; a drop-in for ``SyncVectorEnv``.

    Args:
        env_fns: picklable callables that build the environments (run inside the actors).
        address: a Ray cluster (``"auto"`` or ``HOST:PORT``); None starts a local runtime with
            one logical CPU per environment (at least the machine's cores). Ignored when Ray
            is already initialised in this process.
        emit: receives an :class:`ActorRestarted` event for every restarted actor.
        threads: torch threads per actor.
        max_restarts: restarts of one environment within one episode before giving up.

    ``reset`` may take ``options={"round": r}``: ``r`` is recorded in restart events (the
    options are also passed on to the environments, as ``SyncVectorEnv`` does).

    Raises:
        BackendError: Ray missing, the address not answering, actors that do not start, or
            that run another esper version than this process.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        address: str | None = None,
        emit: Callable[[Event], None] | None = None,
        threads: int = 1,
        max_restarts: int = MAX_RESTARTS,
    ) -> None:
        super().__init__()
        self._ray = import_ray()
        check_address(address)
        self.env_fns = list(env_fns)
        self.num_envs = len(self.env_fns)
        self._emit, self._threads, self.max_restarts = emit, threads, max_restarts
        self._owns_ray = _connect(self._ray, address, num_cpus=max(self.num_envs, os.cpu_count() or 1))
        self.actors: list[Any] = []
        try:
            self.actors = self._spawn(range(self.num_envs))
            spaces = self._ray.get([actor.make.remote() for actor in self.actors])
        except BaseException:
            self.close()
            raise
        self.single_observation_space, self.single_action_space, metadata = spaces[0]
        for i, (obs_space, act_space, _) in enumerate(spaces):
            if obs_space != self.single_observation_space or act_space != self.single_action_space:
                self.close()
                raise ConfigError(
                    f"environment {i} has other spaces than environment 0: {obs_space}, {act_space}"
                )
        self.metadata = {**metadata, "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._observations: Any = create_empty_array(
            self.single_observation_space, n=self.num_envs, fn=np.zeros
        )
        self._episodes = [_Episode(None, None) for _ in range(self.num_envs)]
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)
        self._round = 0

    # ----------------------------------------------------------------- actors
    def _spawn(self, indices: Sequence[int] | range) -> list[Any]:
        """Start one actor per index and check that each runs this process's esper version."""
        ray = self._ray
        remote = ray.remote(_EnvWorker).options(num_cpus=1, max_restarts=0)
        actors = [remote.remote(self.env_fns[i], self._threads) for i in indices]
        try:
            ids = ray.get([actor.identify.remote() for actor in actors], timeout=START_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            _kill(ray, actors)
            if isinstance(exc, ray.exceptions.GetTimeoutError):
                cpus = ray.cluster_resources().get("CPU", 0)
                raise BackendError(
                    f"{len(actors)} environment actor(s) did not start within {START_TIMEOUT_S:.0f} s; "
                    f"each needs 1 CPU and the cluster has {cpus:g} in all: use fewer --envs or more nodes"
                ) from exc
            raise BackendError(  # e.g. the environments' code cannot be imported there
                f"an environment actor failed to start: {exc}\nEvery node needs esper (and the code of "
                "the environments) importable by the Python that runs Ray."
            ) from exc
        wrong = [(i, d) for i, d in zip(indices, ids, strict=True) if d["esper"] != esper.__version__]
        if wrong:
            _kill(ray, actors)
            listed = ", ".join(f"env {i} on {d['node']}: esper {d['esper']}" for i, d in wrong)
            raise BackendError(
                f"esper versions differ: the driver runs esper {esper.__version__}, but {listed}; "
                "install the same esper version on every node of the Ray cluster"
            )
        return actors

    def _get(self, i: int, ref: Any) -> Any:
        """The result of a call on environment ``i``; a dead actor is restarted and the call redone."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            return self._recover(i, exc)

    def _recover(self, i: int, exc: BaseException) -> Any:
        """Replace environment ``i``'s actor and redo its episode up to the lost call; that call's result."""
        ray, episode = self._ray, self._episodes[i]
        for attempt in range(1, self.max_restarts + 1):
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'actor died'}"
            if self._emit is not None:
                self._emit(
                    ActorRestarted(epoch=self._round, round=self._round, env=i, step=len(episode.actions),
                                   seed=episode.seed, reason=reason, attempt=attempt)
                )  # fmt: skip
            _kill(ray, [self.actors[i]])
            try:
                (self.actors[i],) = self._spawn([i])
                actor = self.actors[i]
                ray.get(actor.make.remote())
                result = ray.get(actor.reset.remote(episode.seed, episode.options))
                for action in episode.actions:
                    result = ray.get(actor.step.remote(action))
                return result
            except ray.exceptions.RayActorError as again:
                exc = again
        raise BackendError(
            f"environment {i}'s actor died {self.max_restarts + 1} times in one episode "
            f"(seed {episode.seed}); last: {exc}"
        ) from exc

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every environment; seeds as in ``SyncVectorEnv`` (None, ``s`` -> ``s + i``, or a list)."""
        seeds: list[int | None]
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} environments")
        if options is not None and "reset_mask" in options:
            raise ValueError("RayVectorEnv resets every environment; options['reset_mask'] is not supported")
        self._round = int((options or {}).get("round", self._round))
        self._episodes = [_Episode(s, options) for s in seeds]
        refs = [actor.reset.remote(s, options) for actor, s in zip(self.actors, seeds, strict=True)]
        results = [self._get(i, ref) for i, ref in enumerate(refs)]
        self._autoreset[:] = False
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(results):
            self._note_seed(i, info)
            infos = self._add_info(infos, info, i)
        return self._batch([obs for obs, _ in results]), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every environment; one that ended on the last step is reset instead (``NEXT_STEP``)."""
        refs = []
        for i, action in enumerate(iterate(self.action_space, actions)):
            if self._autoreset[i]:
                self._episodes[i] = _Episode(None, None)
                refs.append(self.actors[i].reset.remote(None, None))
            else:
                self._episodes[i].actions.append(action)
                refs.append(self.actors[i].step.remote(action))
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        observations: list[Any] = []
        infos: dict[str, Any] = {}
        for i, ref in enumerate(refs):
            result = self._get(i, ref)
            if self._autoreset[i]:
                obs, info = result
                self._note_seed(i, info)
            else:
                obs, rewards[i], terminated[i], truncated[i], info = result
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._autoreset = np.logical_or(terminated, truncated)
        return self._batch(observations), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close the environments, end their actors, and shut Ray down if this env started it."""
        ray = self._ray
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get([actor.close.remote() for actor in self.actors], timeout=CLOSE_TIMEOUT_S)
        _kill(ray, self.actors)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # ----------------------------------------------------------------- helpers
    def _note_seed(self, i: int, info: dict[str, Any]) -> None:
        """An unseeded reset is redone with the seed the environment reports (``info["seed"]``)."""
        if self._episodes[i].seed is None and isinstance(info.get("seed"), int | np.integer):
            self._episodes[i].seed = int(info["seed"])

    def _batch(self, observations: list[Any]) -> Any:
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        return deepcopy(self._observations)

"""PPO training of a growth policy over ``K`` parallel :class:`MorphogenesisEnv` environments.

One *round* = one episode in each of the ``K`` environments (``episode_length`` steps, each a
host epoch), then one PPO update over those ``K * episode_length`` transitions. After every
round the run directory gets ``policy.pt`` (the network with its config, loadable with
``weights_only=True``) and ``ppo_checkpoint.pt`` (policy, optimizer, RNG, history; atomic), so
a killed run resumes from its last finished round with ``resume=True``. Each round emits a
``PPOUpdate`` event (JSONL, console, optional TensorBoard).

Environment seeds are a function of ``(seed, round, env index)``, so a round's episodes are
the same whether the run was resumed or not.

``backend="local"`` runs the environments in this process (``SyncVectorEnv``) or in spawned
subprocesses (``vector="async"``); ``backend="ray"`` runs each in a Ray actor (see
:mod:`esper.simic.ray_backend`), on a local Ray runtime or the cluster at ``address``. Both give
the same rollouts for the same seeds, and a run may resume on the other backend.

With ``lstm=True`` the policy is recurrent: the rollout threads the LSTM state from step to
step (zeroed where an episode starts), the buffer records the state the rollout started from,
and the update replays whole environment sequences from it (``minibatch_size // episode_length``
environments per minibatch, at least one). Every round starts fresh episodes, so no LSTM state
outlives a round: the checkpoint's policy weights and config are all a resume needs.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, SupportsFloat, TypeVar

import gymnasium as gym
import numpy as np
import torch

from esper.errors import CheckpointError, ConfigError
from esper.leyline.actions import HEADS
from esper.leyline.events import Event, PPOUpdate
from esper.nissa.io import atomic_write_bytes, atomic_write_text
from esper.nissa.telemetry import Sink, Telemetry
from esper.simic.buffer import RolloutBuffer
from esper.simic.env import MorphogenesisEnv
from esper.simic.ppo import PPOConfig, PPOTrainer
from esper.simic.ray_backend import RayVectorEnv, check_address  # imports Ray only when used
from esper.simic.rewards import REWARD_MODES
from esper.tamiyo.features import observation_layout
from esper.tamiyo.learned import select_actions
from esper.tamiyo.masks import JointLegality
from esper.tamiyo.policy_net import FactoredPolicy
from esper.tolaria.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["POLICY_NAME", "PPO_CHECKPOINT", "RESUMABLE", "PPORunConfig", "make_vector_env", "train_ppo"]

_T = TypeVar("_T")

PPO_CHECKPOINT = "ppo_checkpoint.pt"
POLICY_NAME = "policy.pt"
VECTOR_MODES = ("auto", "sync", "async")
BACKENDS = ("local", "ray")
# may change between a run and its resume without changing what is learned
RESUMABLE = frozenset({"rounds", "out", "quiet", "tensorboard", "vector", "backend", "address"})


@dataclass(frozen=True)
class PPORunConfig:
    """A PPO training run. ``vector="auto"`` uses ``SyncVectorEnv`` (faster on few cores: see
    benchmarks/ppo_throughput.py); ``"async"`` runs each environment in a spawned process.
    ``backend="ray"`` runs each environment in a Ray actor instead, on the cluster at
    ``address`` (``"auto"`` or ``HOST:PORT``; None starts a local Ray runtime)."""

    task: str = "digits-impaired"
    rounds: int = 20
    envs: int = 2
    episode_length: int = 10
    episode_lengths: list[int] | None = None
    """Sample each round's episode length from these (one policy for several budgets);
    None: every round is ``episode_length`` long."""
    reward: str = "shaped"
    seed: int = 0
    out: str = "runs/ppo"
    vector: str = "auto"
    backend: str = "local"
    address: str | None = None
    hidden: int = 64
    lstm: bool = False
    lstm_hidden: int = 64
    lr: float = 3e-4
    ppo_epochs: int = 4
    minibatch_size: int = 32
    ent_coef: float = 0.01
    ent_coef_final: float | None = None
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    amp: str = "none"
    slots: list[str] | None = None
    max_seed_params: int | None = None
    host_checkpoint: str | None = None
    tensorboard: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be an int >= 1, got {getattr(self, name)!r}"
            for name in ("rounds", "envs", "episode_length", "hidden", "lstm_hidden")
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1)
        ]
        if self.episode_lengths is not None and not (
            isinstance(self.episode_lengths, list)
            and self.episode_lengths
            and all(type(n) is int and n >= 1 for n in self.episode_lengths)
        ):
            given = self.episode_lengths
            problems.append(f"episode_lengths must be a non-empty list of ints >= 1, got {given!r}")
        if not isinstance(self.lstm, bool):
            problems.append(f"lstm must be a bool, got {self.lstm!r}")
        if self.reward not in REWARD_MODES:
            problems.append(f"reward {self.reward!r} is not one of {list(REWARD_MODES)}")
        if isinstance(self.seed, int) and not 0 <= self.seed < 2**63:
            problems.append(f"seed must be in [0, 2**63), got {self.seed}")
        if self.vector not in VECTOR_MODES:
            problems.append(f"vector {self.vector!r} is not one of {list(VECTOR_MODES)}")
        problems += self._backend_problems()
        try:
            self.ppo_config()
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("invalid PPO run config:\n  - " + "\n  - ".join(problems))

    def _backend_problems(self) -> list[str]:
        if self.backend not in BACKENDS:
            return [f"backend {self.backend!r} is not one of {list(BACKENDS)}"]
        if self.backend == "local":
            return [] if self.address is None else [
                f"address {self.address!r} needs backend 'ray' (got backend 'local')"
            ]
        problems = [] if self.vector == "auto" else [
            f"vector {self.vector!r} applies to backend 'local' only; backend 'ray' runs one actor per env"
        ]
        try:
            check_address(self.address)
        except ConfigError as exc:
            problems.append(str(exc))
        return problems

    def ppo_config(self) -> PPOConfig:
        """The PPO hyperparameters; the entropy coefficient anneals over all ``rounds``.

        ``amp`` is a plain str here (it comes from files and flags); PPOConfig validates it.
        """
        return PPOConfig(
            lr=self.lr,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            clip_coef=self.clip_coef,
            clip_vloss=self.clip_vloss,
            vf_coef=self.vf_coef,
            ent_coef=self.ent_coef,
            ent_coef_final=self.ent_coef_final,
            ent_anneal_updates=self.rounds if self.ent_coef_final is not None else 0,
            max_grad_norm=self.max_grad_norm,
            ppo_epochs=self.ppo_epochs,
            minibatch_size=self.minibatch_size,
            target_kl=self.target_kl,
            amp_dtype=self.amp,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build_policy(
        self, obs_dim: int, head_sizes: dict[str, int], layout: dict[str, Any] | None = None
    ) -> FactoredPolicy:
        """The (untrained) policy network this run trains, recording its observation layout."""
        return FactoredPolicy(
            obs_dim,
            head_sizes,
            hidden=self.hidden,
            lstm=self.lstm,
            lstm_hidden=self.lstm_hidden,
            layout=layout,
        )

    def observation_layout(self) -> dict[str, Any]:
        """The slots, blueprints and feature version this run's environments observe."""
        env = MorphogenesisEnv(
            task=self.task, episode_length=self.episode_length, slots=self.slots,
            max_seed_params=self.max_seed_params,
        )  # fmt: skip
        return observation_layout(env.layout.slot_ids, env.layout.blueprints)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> PPORunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown PPO run config keys {unknown}; valid: {sorted(known)}")
        return cls(**data)


def _env_factory(config: PPORunConfig, threads: int | None) -> Callable[[], gym.Env]:
    return partial(
        _make_env,
        threads,
        task=config.task,
        episode_length=config.episode_length,
        slots=config.slots,
        reward=config.reward,
        host_checkpoint=config.host_checkpoint,
        max_seed_params=config.max_seed_params,
    )


def _make_env(threads: int | None, **kwargs: Any) -> gym.Env:
    if threads is not None:
        torch.set_num_threads(threads)  # one process per env: don't oversubscribe the cores
    return _OwnRNG(MorphogenesisEnv(**kwargs))


class _OwnRNG(gym.Wrapper):
    """Gives an environment its own global torch and Python RNG streams, as a process of its own
    has: its host training (which seeds and draws from them) and the rollout's action sampling
    in the same process neither feed nor see each other's draws. So the in-process backend gives
    the same rollouts as subprocesses and Ray actors. The streams start as a fresh process's
    torch stream and ``Random(0)``; ``reset`` reseeds them from the episode's seed anyway."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._torch_state = torch.Generator().get_state()
        self._python_state = random.Random(0).getstate()

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return self._isolated(self.env.reset, **kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        return self._isolated(self.env.step, action)

    def _isolated(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        caller = torch.get_rng_state(), random.getstate()
        torch.set_rng_state(self._torch_state)
        random.setstate(self._python_state)
        try:
            return fn(*args, **kwargs)
        finally:
            self._torch_state, self._python_state = torch.get_rng_state(), random.getstate()
            torch.set_rng_state(caller[0])
            random.setstate(caller[1])


def make_vector_env(
    config: PPORunConfig, emit: Callable[[Event], None] | None = None
) -> gym.vector.VectorEnv:
    """``K`` environments; async ones are spawned (forking a process that has run torch can deadlock).

    ``emit`` receives the Ray backend's ``ActorRestarted`` events (the local backends emit none).

    Raises:
        BackendError: backend ``"ray"`` without Ray, with an address that does not answer, or
            with actors that run another esper version.
    """
    if config.backend == "ray":
        fns = [_env_factory(config, threads=1) for _ in range(config.envs)]
        return RayVectorEnv(fns, address=config.address, emit=emit)
    if config.vector == "async" and config.envs > 1:
        fns = [_env_factory(config, threads=1) for _ in range(config.envs)]
        return gym.vector.AsyncVectorEnv(fns, context="spawn")
    return gym.vector.SyncVectorEnv([_env_factory(config, threads=None) for _ in range(config.envs)])


def _legality(info: dict[str, Any], n: int) -> list[JointLegality]:
    return [JointLegality(info["legal_op_slot"][i], info["legal_blueprint"][i]) for i in range(n)]


def _episode_seeds(config: PPORunConfig, round_: int) -> list[int]:
    return [
        (config.seed * 1_000_003 + round_ * 7_919 + i * 104_729) % (2**31 - 1) for i in range(config.envs)
    ]


class _Rollout:
    """Collects one episode per environment into a :class:`RolloutBuffer`."""

    def __init__(
        self, envs: gym.vector.VectorEnv, policy: FactoredPolicy, config: PPORunConfig, length: int
    ) -> None:
        self.envs, self.policy, self.config, self.length = envs, policy, config, length
        n, t = config.envs, length
        lstm_hidden = policy.lstm_hidden if policy.use_lstm else 0
        self.buffer = RolloutBuffer(
            t, n, policy.obs_dim, len(HEADS), policy.mask_dim, lstm_hidden=lstm_hidden
        )

    def collect(self, seeds: list[int], round_: int) -> dict[str, float]:
        n = self.config.envs
        # Vector envs accept one seed per env, which gymnasium's stub does not say.
        # The round is for the Ray backend's restart events; environments ignore it.
        options = {"round": round_, "episode_length": self.length}
        obs, info = self.envs.reset(seed=seeds, options=options)  # type: ignore[arg-type]
        # The state the rollout starts from (zeros; step 0 starts every episode anyway).
        state = self.policy.initial_state(n) if self.policy.use_lstm else None
        self.buffer.reset(state)
        returns = np.zeros(n)
        illegal, env_time, policy_time = 0, 0.0, 0.0
        start = torch.ones(n)
        final_acc, seed_params = np.zeros(n), np.zeros(n)
        for _ in range(self.length):
            t0 = time.perf_counter()
            obs_t = torch.as_tensor(obs, dtype=torch.float32)
            chosen = select_actions(self.policy, obs_t, _legality(info, n), state=state, episode_starts=start)
            state = chosen.state
            t1 = time.perf_counter()
            obs, reward, _terminated, _truncated, info = self.envs.step(chosen.actions.numpy())
            env_time += time.perf_counter() - t1
            policy_time += t1 - t0
            r = torch.as_tensor(reward, dtype=torch.float32)
            self.buffer.add(obs_t, chosen.actions, chosen.masks, chosen.log_prob, chosen.value, r, start)
            # Every episode lasts exactly episode_length steps: the next start is the next round.
            start = torch.zeros(n)
            returns += reward
            illegal += int(np.sum(info["illegal_action"]))
            if "final_accuracy" in info:
                done = info["_final_accuracy"]
                final_acc[done] = info["final_accuracy"][done]
                seed_params[done] = info["seed_params"][done]
        cfg = self.config
        self.buffer.compute_returns_and_advantages(torch.zeros(n), torch.ones(n), cfg.gamma, cfg.gae_lambda)
        steps = n * self.length
        return {
            "mean_return": float(returns.mean()),
            "final_accuracy": float(final_acc.mean()),
            "seed_params": float(seed_params.mean()),
            "illegal_rate": illegal / steps,
            "env_time_s": env_time,
            "policy_time_s": policy_time,
        }


def train_ppo(
    config: PPORunConfig, *, resume: bool = False, sinks: Callable[[], list[Sink]] | None = None
) -> dict[str, Any]:
    """Train (or continue) a PPO run; returns the summary also written to ``summary.json``.

    ``sinks`` builds where the run's events go, once the run folder has been checked
    (``esper.recipes.ppo.run_ppo`` gives it the run folder's).

    Raises:
        ConfigError: a fresh run into a directory that already holds one (use ``resume``), or
            a resume whose settings differ from the saved run's.
        CheckpointError: ``resume`` without a checkpoint in ``config.out``.
        BackendError: the environments' backend cannot start (see :func:`make_vector_env`);
            nothing is written then.
    """
    out = Path(config.out)
    ckpt_path = out / PPO_CHECKPOINT
    saved = _load_for_resume(config, ckpt_path) if resume else None
    if not resume and ckpt_path.exists():
        raise ConfigError(
            f"{str(out)!r} already holds a PPO run; pass --resume to continue it or choose another --out"
        )
    telemetry = Telemetry()  # its sinks come once the run folder exists
    envs = make_vector_env(config, emit=telemetry.emit)  # fails before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "ppo_config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        obs_dim = int(envs.single_observation_space.shape[0])  # type: ignore[index]
        head_sizes = dict(zip(HEADS, (int(n) for n in envs.single_action_space.nvec), strict=True))  # type: ignore[attr-defined]
        torch.manual_seed(config.seed)  # before the policy's init, so that it is seeded too
        policy = config.build_policy(obs_dim, head_sizes, config.observation_layout())
        trainer = PPOTrainer(
            policy, config.ppo_config(), generator=torch.Generator().manual_seed(config.seed)
        )
        sampler = torch.Generator().manual_seed(config.seed + 1)
        history: list[dict[str, float]] = []
        if saved is not None:
            trainer.load_state_dict(saved["trainer"])
            sampler.set_state(saved["sampler"])
            history = [dict(h) for h in saved["history"]]
        for sink in sinks() if sinks else []:
            telemetry.add_sink(sink)
        with telemetry:
            for round_ in range(len(history), config.rounds):
                metrics = _train_round(envs, policy, trainer, config, round_, sampler)
                history.append(metrics)
                telemetry.emit(PPOUpdate(epoch=round_, round=round_, metrics=metrics))
                _save(out, policy, trainer, sampler, history, config)
    finally:
        envs.close()
    summary = {
        "rounds": len(history),
        "final_mean_return": history[-1]["mean_return"] if history else None,
        "final_accuracy": history[-1]["final_accuracy"] if history else None,
        "policy": str(out / POLICY_NAME),
        "out": str(out),
        "torch_threads": torch.get_num_threads(),  # results depend on it
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _train_round(
    envs: gym.vector.VectorEnv,
    policy: FactoredPolicy,
    trainer: PPOTrainer,
    config: PPORunConfig,
    round_: int,
    sampler: torch.Generator,
) -> dict[str, float]:
    start = time.perf_counter()
    length = round_length(config, round_)
    rollout = _Rollout(envs, policy, config, length)
    with torch.random.fork_rng(devices=[]):  # action sampling has its own, checkpointed stream
        torch.set_rng_state(sampler.get_state())
        stats = rollout.collect(_episode_seeds(config, round_), round_)
        sampler.set_state(torch.get_rng_state())
    t0 = time.perf_counter()
    metrics = trainer.update(rollout.buffer)
    update_time = time.perf_counter() - t0
    steps = config.envs * length
    elapsed = time.perf_counter() - start
    metrics.update(stats)
    metrics.update(
        update_time_s=update_time,
        steps_per_s=steps / elapsed,
        controller_overhead=(stats["policy_time_s"] + update_time) / max(stats["env_time_s"], 1e-9),
        episode_length=float(length),
    )
    return metrics


def round_length(config: PPORunConfig, round_: int) -> int:
    """The episode length of ``round_``: drawn from ``episode_lengths`` by (seed, round), so a
    resumed run draws the same; else ``episode_length``."""
    if not config.episode_lengths:
        return config.episode_length
    index = (config.seed * 7_919 + round_ * 104_729 + 13) % len(config.episode_lengths)
    return config.episode_lengths[index]


def _save(
    out: Path,
    policy: FactoredPolicy,
    trainer: PPOTrainer,
    sampler: torch.Generator,
    history: list[dict[str, float]],
    config: PPORunConfig,
) -> None:
    buffer = io.BytesIO()
    torch.save({"config": policy.policy_config(), "state_dict": policy.state_dict()}, buffer)
    atomic_write_bytes(out / POLICY_NAME, buffer.getvalue())  # same format as save_policy
    save_checkpoint(
        out / PPO_CHECKPOINT,
        {
            "kind": "ppo",
            "config": config.to_dict(),
            "policy_config": policy.policy_config(),
            "trainer": trainer.state_dict(),
            "sampler": sampler.get_state(),
            "history": history,
        },
    )


def _load_for_resume(config: PPORunConfig, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"cannot resume: no {PPO_CHECKPOINT} in {str(path.parent)!r}")
    data = load_checkpoint(path)
    if data.get("kind") != "ppo":
        raise CheckpointError(f"{str(path)!r} is not a PPO checkpoint")
    saved = data["config"]
    # A field the saved run predates (e.g. lstm) had its default there.
    differ = [
        f"{f.name}: saved {saved.get(f.name, f.default)!r}, given {getattr(config, f.name)!r}"
        for f in fields(config)
        if f.name not in RESUMABLE and getattr(config, f.name) != saved.get(f.name, f.default)
    ]
    if differ:
        raise ConfigError("cannot resume with different settings:\n  - " + "\n  - ".join(differ))
    return data

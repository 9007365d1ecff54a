"""PPO throughput: environment steps per second, PPO update time, and where a round's time goes.

Runs ``esper train ppo`` in-process (``train_ppo``, ``SyncVectorEnv``) for a feed-forward and
an LSTM policy, and splits every round's wall time with a small exclusive-time probe wrapped
around the methods that do the work:

* **host training**: ``Engine.train_epoch`` (train + evaluate + counterfactuals + the engine's
  own bookkeeping) -- what a run without a learned controller would spend anyway. Each
  episode trains ``episode_length + 1`` epochs (``reset`` trains epoch 0).
* **policy forward**: ``FactoredPolicy.step_features`` / ``act_features`` / ``score_features``
  during the rollout (the trunk and LSTM once, then three masked
  head draws and the log-prob of each step).
* **masks + features**: the rest of the controller's step -- legality and conditional masks
  (``select_actions`` minus its forwards, plus the rollout's tensor conversions), the
  environment's side of ``step`` (apply the action, observe, features, legality, reward) and
  the vector env's batching of observations and infos.
* **PPO update**: ``PPOTrainer.update`` (GAE is computed in the rollout, and counted there).

Target: (policy forward + masks/features + update/steps) per step < 10% of host training per
epoch. Round 0 pays for warm-up (first allocations, lazy imports) and is left out of the
medians when there are more rounds.

A second table compares where the environments run (the feed-forward policy): ``sync`` (this
process), ``async`` (one spawned subprocess each) and ``ray`` (one Ray actor each, on a local
Ray runtime started once with as many logical CPUs as the most environments), for each count
in ``--env-counts``. The probe cannot see into other processes, so there the overhead is the
round's own split: (rollout policy time + PPO update) / wall time spent waiting for the
environments (``controller_overhead`` of the ``ppo_update`` event). Every environment process
uses one torch thread, as the driver does.

    python benchmarks/ppo_throughput.py [--quick] [--envs 2] [--episode-length 10] [--rounds 5]
        [--policy both|ff|lstm|none] [--backends sync,async,ray|none] [--env-counts 1,2,4]
        [--threads 1] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _timing import describe, fmt_table, machine_info, pin_threads, write_json
from esper.leyline.events import Event, PPOUpdate
from esper.simic import training
from esper.simic.env import MorphogenesisEnv
from esper.simic.ppo import PPOTrainer
from esper.simic.training import PPORunConfig, train_ppo
from esper.tamiyo.policy_net import FactoredPolicy
from esper.tolaria.engine import Engine

TARGET = 0.10


class Probe:
    """Exclusive wall time per bucket: a wrapped call's time goes to its bucket, minus the time
    of wrapped calls nested in it (which go to theirs). ``bucket`` may depend on the caller's
    bucket (``parent``; None at top level); naming the parent's own bucket folds the call in."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []

    def wrap(self, fn: Callable[..., Any], bucket: str | Callable[[str | None], str]) -> Callable[..., Any]:
        probe = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            parent = probe._stack[-1] if probe._stack else None
            name = bucket(parent) if callable(bucket) else bucket
            probe._stack.append(name)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                probe._stack.pop()
                probe.totals[name] += elapsed
                if parent is not None:
                    probe.totals[parent] -= elapsed

        return timed

    def take(self) -> dict[str, float]:
        """The totals since the last take (and start afresh)."""
        totals, self.totals = dict(self.totals), defaultdict(float)
        return totals


def _host_bucket(parent: str | None) -> str:
    return "host_reset" if parent == "env_reset" else "host_step"


def _forward_bucket(parent: str | None) -> str:
    return "forward" if parent == "select" else (parent or "forward")


@contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    """Wrap the timed methods for the duration of the block (restored afterwards)."""
    targets: list[tuple[Any, str, str | Callable[[str | None], str]]] = [
        (Engine, "train_epoch", _host_bucket),
        (MorphogenesisEnv, "step", "env_step"),
        (MorphogenesisEnv, "reset", "env_reset"),
        (FactoredPolicy, "step_features", _forward_bucket),
        (FactoredPolicy, "act_features", _forward_bucket),
        (FactoredPolicy, "score_features", _forward_bucket),
        (PPOTrainer, "update", "update"),
        (training, "select_actions", "select"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    try:
        for owner, name, bucket in targets:
            setattr(owner, name, probe.wrap(getattr(owner, name), bucket))
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


class RoundSink:
    """Telemetry sink: at every ``PPOUpdate`` keeps the round's metrics and the probe's totals."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.rounds: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        if isinstance(event, PPOUpdate):
            self.rounds.append({"metrics": dict(event.metrics), "probe": self.probe.take()})

    def close(self) -> None:
        pass


def split_round(rnd: dict[str, Any], envs: int, episode_length: int) -> dict[str, float]:
    """Per-step (ms) and per-epoch (ms) numbers of one round."""
    m, p = rnd["metrics"], rnd["probe"]
    steps, epochs = envs * episode_length, envs * (episode_length + 1)
    host = p.get("host_step", 0.0) + p.get("host_reset", 0.0)
    env_side = m["env_time_s"] - p.get("host_step", 0.0)  # step minus epoch, plus vector plumbing
    masks = m["policy_time_s"] - p.get("forward", 0.0) + env_side
    update = m["update_time_s"]
    overhead_step = (p.get("forward", 0.0) + masks + update) / steps
    host_epoch = host / epochs
    return {
        "steps_per_s": m["steps_per_s"],
        "host_ms_per_epoch": 1e3 * host_epoch,
        "forward_ms_per_step": 1e3 * p.get("forward", 0.0) / steps,
        "masks_features_ms_per_step": 1e3 * masks / steps,
        "update_ms": 1e3 * update,
        "update_ms_per_step": 1e3 * update / steps,
        "env_reset_setup_ms": 1e3 * p.get("env_reset", 0.0) / envs,
        "overhead_ms_per_step": 1e3 * overhead_step,
        "overhead_fraction": overhead_step / host_epoch,
    }


def run_variant(lstm: bool, args: argparse.Namespace) -> dict[str, Any]:
    probe = Probe()
    sink = RoundSink(probe)
    with tempfile.TemporaryDirectory() as out, instrumented(probe):
        config = PPORunConfig(
            task=args.task, rounds=args.rounds, envs=args.envs, episode_length=args.episode_length,
            out=out, quiet=True, vector="sync", lstm=lstm, seed=0,
        )  # fmt: skip
        start = time.perf_counter()
        train_ppo(config, sinks=lambda: [sink])
        total = time.perf_counter() - start
    rounds = [split_round(r, args.envs, args.episode_length) for r in sink.rounds]
    measured = rounds[1:] if len(rounds) > 1 else rounds
    medians = {k: statistics.median(r[k] for r in measured) for k in measured[0]}
    return {"lstm": lstm, "total_s": total, "rounds": rounds, "median": medians}


def run_backend(backend: str, envs: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run of the feed-forward policy with ``envs`` environments on ``backend``."""
    sink = RoundSink(Probe())
    where = {"backend": "ray"} if backend == "ray" else {"vector": backend}
    with tempfile.TemporaryDirectory() as out:
        config = PPORunConfig(
            task=args.task, rounds=args.rounds, envs=envs, episode_length=args.episode_length,
            out=out, quiet=True, seed=0, **where,
        )  # fmt: skip
        start = time.perf_counter()
        train_ppo(config, sinks=lambda: [sink])
        total = time.perf_counter() - start
    rounds = [r["metrics"] for r in sink.rounds]
    measured = rounds[1:] if len(rounds) > 1 else rounds
    keys = ("steps_per_s", "env_time_s", "policy_time_s", "update_time_s", "controller_overhead")
    medians = {k: statistics.median(float(r[k]) for r in measured) for k in keys}
    return {"backend": backend, "envs": envs, "total_s": total, "median": medians,
            "rounds": [{k: float(r[k]) for k in keys} for r in rounds]}  # fmt: skip


def backend_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """:func:`run_backend` for every backend and env count (Ray started once, shut down after)."""
    backends = [b for b in args.backends.split(",") if b and b != "none"]
    counts = [int(n) for n in args.env_counts.split(",")]
    ray = None
    if "ray" in backends:
        import ray

        src = str(Path(__file__).resolve().parents[1] / "src")  # actors import the same esper
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=max(counts), include_dashboard=False, logging_level="WARNING")
    try:
        return [run_backend(b, n, args) for b in backends for n in counts]
    finally:
        if ray is not None:
            ray.shutdown()


def print_grid(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = []
    for res in results:
        med = res["median"]
        steps = res["envs"] * args.episode_length
        rows.append([
            res["backend"], res["envs"], med["steps_per_s"], 1e3 * med["env_time_s"] / steps,
            1e3 * med["policy_time_s"] / steps, 1e3 * med["update_time_s"], 100 * med["controller_overhead"],
            "met" if med["controller_overhead"] < TARGET else "NOT met", res["total_s"],
        ])  # fmt: skip
    headers = ["backend", "envs", "env steps/s", "env wait ms/step", "policy ms/step", "PPO update ms/round",
               "overhead % of env time", f"< {TARGET:.0%}", "run s (incl. start)"]  # fmt: skip
    print(f"\nbackends: feed-forward policy, {args.episode_length} steps per episode, {args.rounds} rounds")
    print(fmt_table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits-impaired")
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--episode-length", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--policy", choices=("both", "ff", "lstm", "none"), default="both")
    parser.add_argument("--backends", default="sync,async,ray", help="comma list of sync/async/ray, or none")
    parser.add_argument("--env-counts", default="1,2,4", help="environment counts for the backend table")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 rounds (the first is warm-up)")
    parser.add_argument("--out", default="benchmarks/results/ppo_throughput.json")
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 3)
    threads = pin_threads(args.threads)
    variants = {"ff": [False], "lstm": [True], "both": [False, True], "none": []}[args.policy]
    results = [run_variant(lstm, args) for lstm in variants]
    grid = backend_grid(args)
    info = machine_info()
    rows = []
    for res in results:
        med = res["median"]
        rows.append([
            "lstm" if res["lstm"] else "feed-forward", med["steps_per_s"], med["host_ms_per_epoch"],
            med["forward_ms_per_step"], med["masks_features_ms_per_step"], med["update_ms"],
            100 * med["overhead_fraction"], "met" if med["overhead_fraction"] < TARGET else "NOT met",
        ])  # fmt: skip
    print(
        f"{args.task}, {args.envs} envs x {args.episode_length} steps, {args.rounds} rounds "
        f"(median over rounds {'1..' if args.rounds > 1 else '0..'}{args.rounds - 1})\n{describe(info)}"
    )
    headers = ["policy", "env steps/s", "host ms/epoch", "forward ms/step", "masks+features ms/step",
               "PPO update ms/round", "overhead % of host", f"< {TARGET:.0%}"]  # fmt: skip
    if rows:
        print(fmt_table(headers, rows))
    if grid:
        print_grid(grid, args)
    write_json(
        args.out,
        {
            "benchmark": "ppo_throughput",
            "task": args.task,
            "envs": args.envs,
            "episode_length": args.episode_length,
            "rounds": args.rounds,
            "threads": threads,
            "target_overhead_fraction": TARGET,
            "machine": info,
            "variants": results,
            "backends": grid,
        },
    )


if __name__ == "__main__":
    main()

"""``esper train ppo``, ``esper train policy`` and ``esper eval``: the learned controller's commands.

:mod:`esper.cli.main` adds them to its groups.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from esper.cli.options import common_run_options
from esper.cli.runs import run_train
from esper.errors import ConfigError
from esper.nissa.io import atomic_write_text
from esper.tolaria.config import SEED_LIMIT

if TYPE_CHECKING:
    from esper.recipes.baselines import GrownRuns, StaticMatched

__all__ = ["eval_command", "train_policy", "train_ppo_command"]

EVAL_SEED_OFFSET = 10_000
"""Evaluation episodes use seeds ``seed + EVAL_SEED_OFFSET + i``, never drawn by PPO training."""


@click.command("ppo")
@click.option("--task", default="digits-impaired", show_default=True, help="Task of every episode.")
@click.option(
    "--rounds", type=int, default=20, show_default=True, help="PPO rounds (one episode per env each)."
)
@click.option("--envs", type=int, default=2, show_default=True, help="Parallel environments.")
@click.option(
    "--episode-length", type=int, default=10, show_default=True, help="Steps (host epochs) per episode."
)
@click.option(
    "--episode-lengths",
    default=None,
    metavar="N,N,...",
    help="Draw each round's episode length from these (one policy for several budgets).",
)
@click.option(
    "--reward",
    type=click.Choice(["shaped", "sparse", "basic", "lifecycle"]),
    default="shaped",
    show_default=True,
    help="lifecycle: pays for fossilized seeds' contributions every step, rent on model growth.",
)
@click.option("--ppo-epochs", type=int, default=4, show_default=True, help="Passes over each rollout.")
@click.option("--lr", type=float, default=3e-4, show_default=True, help="Adam learning rate.")
@click.option("--ent-coef", type=float, default=0.01, show_default=True, help="Entropy bonus.")
@click.option(
    "--ent-coef-final",
    type=float,
    default=None,
    help="Anneal the entropy bonus linearly to this value over --rounds (default: constant).",
)
@click.option("--clip-coef", type=float, default=0.2, show_default=True, help="PPO ratio clip.")
@click.option(
    "--clip-vloss/--no-clip-vloss", default=True, show_default=True, help="Clip the value loss too."
)
@click.option("--max-grad-norm", type=float, default=0.5, show_default=True, help="Gradient clip.")
@click.option("--target-kl", type=float, default=None, help="Stop an update's epochs beyond this KL.")
@click.option(
    "--amp",
    type=click.Choice(["none", "bf16", "fp16"]),
    default="none",
    show_default=True,
    help="Autocast for the policy network (GAE, returns and ratios stay fp32).",
)
@click.option("--lstm", is_flag=True, help="Recurrent policy: an LSTM after the shared trunk.")
@click.option("--lstm-hidden", type=int, default=64, show_default=True, help="LSTM state size (with --lstm).")
@click.option(
    "--vector",
    type=click.Choice(["auto", "sync", "async"]),
    default="auto",
    show_default=True,
    help="Local backend: envs in this process (sync) or in subprocesses (async).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the envs run: here (see --vector), or one Ray actor each (pip install 'esper[ray]').",
)
@click.option(
    "--address",
    default=None,
    help="With --backend ray: the Ray cluster, 'auto' or HOST:PORT (default: start Ray locally).",
)
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="runs/ppo", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished round.")
@click.option("--tensorboard", is_flag=True, help="Also log to --out/tensorboard.")
@click.option("-q", "--quiet", is_flag=True, help="No per-round lines.")
def train_ppo_command(**params: Any) -> None:
    """Train a growth policy with PPO.

    Each round runs one episode per environment and updates the policy; --out gets
    policy.pt (for 'esper train policy' and 'esper eval') and ppo_checkpoint.pt (for --resume).

    \b
    Examples:
      esper train ppo --task digits-impaired --rounds 30 --envs 2 --episode-length 10
      esper train ppo --lstm --episode-length 20 --out runs/ppo-lstm
      esper train ppo --out runs/ppo --resume --rounds 60
      esper train ppo --backend ray --address auto --envs 8 --out runs/ppo-ray
      esper train policy --policy runs/ppo/policy.pt --task digits-impaired
    """
    from esper.recipes.ppo import run_ppo
    from esper.simic.training import PPORunConfig

    resume = params.pop("resume")
    lengths = params.pop("episode_lengths")
    config = PPORunConfig(**params, episode_lengths=_int_list("--episode-lengths", lengths))
    summary = run_ppo(config, resume=resume)
    click.echo(
        f"{summary['rounds']} rounds; last mean return {summary['final_mean_return']:.4f}, "
        f"final accuracy {summary['final_accuracy']:.4f}\n  policy  {summary['policy']}"
    )


def _int_list(option: str, text: str | None) -> list[int] | None:
    """``"20,40,60"`` -> ``[20, 40, 60]``; a bad entry names the option and the value."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers like 20,40,60; got {text!r}") from None


def _controller_fields(spec: str) -> dict[str, Any]:
    from esper.tamiyo import ControllerRegistry  # the package registers the built-in controllers

    named = [name for name in ControllerRegistry.names() if name != "policy"]  # "policy" needs a file
    if spec in named:
        return {"controller": spec}
    if Path(spec).is_file():
        return {"controller": "policy", "policy": str(spec)}
    raise ConfigError(
        f"--controller {spec!r} is neither {'/'.join([*named, 'static-matched'])} nor an existing "
        "policy.pt file"
    )


def _refuse_earlier_runs(parent: Path, configs: list[Any]) -> None:
    """Eval always trains fresh runs: refuse run dirs an earlier eval left (before training any)."""
    taken = [Path(c.out).name for c in configs if Path(c.out).is_dir() and any(Path(c.out).iterdir())]
    if taken:
        raise ConfigError(
            f"{str(parent)!r} already holds the runs of an earlier 'esper eval' ({', '.join(taken)}); "
            "esper eval always trains fresh runs: pass another --out, or remove that folder"
        )


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} +- {std:.4f}"


@click.command("eval")
@click.option(
    "--controller",
    "spec",
    required=True,
    help="static, heuristic, random, PATH/TO/policy.pt, or static-matched (with --against).",
)
@click.option("--task", default="digits-impaired", show_default=True)
@click.option(
    "--episodes", type=int, default=5, show_default=True, help="Runs, each on its own held-out seed."
)
@click.option("--epochs", type=int, default=None, help="Host epochs per run (default: the task's).")
@click.option(
    "--seed",
    type=click.IntRange(0, SEED_LIMIT - EVAL_SEED_OFFSET - 1),
    default=0,
    show_default=True,
    help="Base seed; runs use seed+10000+i.",
)
@click.option(
    "--against",
    multiple=True,
    type=click.Path(file_okay=False),
    help="With static-matched: the grown runs (an 'esper eval' folder or run dirs); their task, "
    "epochs and seeds are used.",
)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Parent of the run dirs.")
def eval_command(
    spec: str,
    task: str,
    episodes: int,
    epochs: int | None,
    seed: int,
    against: tuple[str, ...],
    out: str | None,
) -> None:
    """Score a controller on held-out seeds.

    Trains one fresh run per episode and prints mean +- std of the final accuracy, the added
    parameters and the lifecycle counts. Compare the run dirs with 'esper report'.

    \b
    static-matched trains static hosts at the two widths that bracket the --against runs' mean
    final parameter count, on their seeds, and reports the accuracy interpolated linearly in
    parameters (per seed) with both brackets:
      esper eval --controller heuristic --task digits-impaired --episodes 8 --out evals/heuristic
      esper eval --controller static-matched --against evals/heuristic --out evals/matched
    """
    if spec == "static-matched":
        _eval_static_matched(against, out)
        return
    if against:
        raise ConfigError("--against is for --controller static-matched only")
    _eval_controller(spec, task, episodes, epochs, seed, out)


def _eval_controller(
    spec: str, task: str, episodes: int, epochs: int | None, seed: int, out: str | None
) -> None:
    from esper.recipes.run_dir import RunDir
    from esper.recipes.train import run_training
    from esper.tamiyo.factory import make_controller
    from esper.tolaria.config import RunConfig

    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    fields = _controller_fields(spec)
    name = "policy" if fields["controller"] == "policy" else spec
    parent = Path(out or f"runs/eval-{task}-{name}")
    # Every config is validated before the folder is created.
    configs = [
        RunConfig(
            task=task,
            epochs=epochs,
            seed=run_seed,
            quiet=True,
            out=str(parent / f"{name}-seed{run_seed}"),
            **fields,
        )
        for run_seed in range(seed + EVAL_SEED_OFFSET, seed + EVAL_SEED_OFFSET + episodes)
    ]
    _refuse_earlier_runs(parent, configs)
    with RunDir.open(parent, kind="eval", config={"controller": spec, "task": task, "episodes": episodes,
                                                  "epochs": epochs, "seed": seed}):  # fmt: skip
        summaries = [run_training(config, make_controller(config)) for config in configs]
        keys = ("final_val_accuracy", "total_params", "seed_params", "seeds_germinated", "seeds_fossilized",
                "seeds_pruned")  # fmt: skip
        result = {k: [float(s[k] or 0.0) for s in summaries] for k in keys}
        atomic_write_text(
            parent / "eval.json", json.dumps({"controller": spec, "task": task, **result}, indent=2) + "\n"
        )
    lines = [f"{task} / {name}: {episodes} held-out seeds ({seed + EVAL_SEED_OFFSET}..)"]
    lines += [f"  {k:<20} {_mean_std(v)}" for k, v in result.items()]
    lines.append(f"  run dirs: {parent}/*  (compare with: esper report {parent})")
    click.echo("\n".join(lines))


def _eval_static_matched(against: tuple[str, ...], out: str | None) -> None:
    from esper.recipes.baselines import load_grown_runs, run_static_matched
    from esper.recipes.run_dir import RunDir

    if not against:
        raise ConfigError("--controller static-matched needs --against DIR (the grown runs to match)")
    grown = load_grown_runs(list(against))
    parent = Path(out or f"runs/eval-{grown.task}-static-matched")
    config = {"controller": "static-matched", "against": list(against), "task": grown.task}
    with RunDir.open(parent, kind="eval", config=config):
        matched = run_static_matched(grown, parent)
        payload = {**config, "epochs": grown.epochs, "seeds": grown.seeds,
                   "grown_final_val_accuracy": grown.accuracy, **matched.to_dict()}  # fmt: skip
        atomic_write_text(parent / "eval.json", json.dumps(payload, indent=2) + "\n")
    click.echo(_static_matched_table(grown, matched, parent))


def _static_matched_table(grown: GrownRuns, matched: StaticMatched, parent: Path) -> str:
    lines = [
        f"{grown.task} / static-matched: {len(grown.seeds)} seeds of the grown runs, {grown.epochs} epochs",
        f"  {'':<28} {'params':>8}  final val accuracy",
        f"  {'grown (--against)':<28} {matched.target_params:>8.0f}  {_mean_std(grown.accuracy)}",
    ]
    for width, params, acc in zip(matched.widths, matched.params, matched.accuracy, strict=True):
        lines.append(f"  {f'static width {width}':<28} {params:>8}  {_mean_std(acc)}")
    label = "static-matched (interpolated)"
    lines.append(f"  {label:<28} {matched.target_params:>8.0f}  {_mean_std(matched.interpolated)}")
    diffs = [g - m for g, m in zip(grown.accuracy, matched.interpolated, strict=True)]
    lines.append(f"  grown - static-matched       {statistics.fmean(diffs):+.4f} (paired per seed)")
    lines.append(f"  run dirs: {parent}/*  (compare with: esper report {parent} ...)")
    return "\n".join(lines)


@click.command("policy")
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="A policy.pt written by 'esper train ppo'.",
)
@common_run_options
def train_policy(policy_path: str, **params: Any) -> None:
    """Grow seeds with a learned policy.

    The same engine, options and run directory as 'esper train heuristic'; the policy.pt
    written by 'esper train ppo' decides every epoch's lifecycle action.
    """
    run_train(params, "policy", policy=str(policy_path))

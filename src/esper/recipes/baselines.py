"""Static-matched baselines: static hosts at the widths that bracket a grown model's size.

"Does growth beat just training a model of the final size?" The grown runs' mean final
``total_params`` falls between two host widths; static hosts at both widths are trained on the
grown runs' own seeds and epochs, and their accuracy is interpolated linearly in parameters
(per seed, so the comparison can be paired).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper.data import get_task
from esper.errors import ConfigError
from esper.karn.baselines import StaticPoint, interpolate_accuracy
from esper.recipes.train import run_training
from esper.tamiyo.simple import StaticPolicy
from esper.tolaria.config import RunConfig

__all__ = [
    "GrownRuns",
    "StaticMatched",
    "bracket_widths",
    "load_grown_runs",
    "run_static_matched",
    "static_params",
]

MAX_WIDTH_FACTOR = 16
"""Widths are searched up to this multiple of the task's default width."""


def static_params(task: str, width: int, **task_options: Any) -> int:
    """Parameters of ``task``'s static host at ``width`` (CNN base channels / transformer n_embd).

    Raises:
        ValueError: the host cannot be built at that width (e.g. n_embd not divisible by n_head).
    """
    host = get_task(task, host_channels=width, **task_options).make_host()
    return sum(p.numel() for p in host.parameters())


def _default_width(task: str, **task_options: Any) -> int:
    kwargs = get_task(task, **task_options).host_kwargs
    return int(kwargs.get("base_channels") or kwargs["n_embd"])


def bracket_widths(task: str, target_params: float, **task_options: Any) -> tuple[int, int]:
    """The widest host with at most ``target_params`` and the narrowest with at least as many.

    Widths the host cannot take (a transformer's n_embd must divide into its heads) are skipped.

    Raises:
        ConfigError: no width up to ``MAX_WIDTH_FACTOR`` x the default reaches the target, or
            even the narrowest host is larger than it.
    """
    low: int | None = None
    for width in range(1, MAX_WIDTH_FACTOR * _default_width(task, **task_options) + 1):
        try:
            params = static_params(task, width, **task_options)
        except ValueError:
            continue
        if params == target_params:
            return width, width
        if params < target_params:
            low = width
        else:
            if low is None:
                raise ConfigError(
                    f"{target_params:.0f} parameters is below the narrowest static {task} host "
                    f"(width {width}: {params} parameters); nothing brackets it"
                )
            return low, width
    raise ConfigError(
        f"no static {task} host up to {MAX_WIDTH_FACTOR}x its default width has "
        f"{target_params:.0f} parameters"
    )


@dataclass(frozen=True)
class GrownRuns:
    """What static-matched needs from the grown runs: task, epochs, seeds and final sizes."""

    task: str
    epochs: int
    seeds: list[int]
    total_params: list[int]
    accuracy: list[float]

    @property
    def mean_params(self) -> float:
        return statistics.fmean(self.total_params)


def load_grown_runs(paths: list[str | Path]) -> GrownRuns:
    """Read the grown runs' summaries: each path is a run dir or a folder of run dirs (an eval).

    Raises:
        ConfigError: no finished run found, or runs of different tasks or epoch budgets.
    """
    summaries: list[dict[str, Any]] = []
    for path in map(Path, paths):
        files = (
            [path / "summary.json"]
            if (path / "summary.json").is_file()
            else sorted(path.glob("*/summary.json"))
        )
        summaries += [json.loads(f.read_text(encoding="utf-8")) for f in files]
    if not summaries:
        raise ConfigError(f"--against {', '.join(map(str, paths))}: no finished run (summary.json) found")
    for key in ("task", "epochs"):
        values = sorted({str(s[key]) for s in summaries})
        if len(values) > 1:
            raise ConfigError(f"--against runs differ in {key} ({', '.join(values)}); compare like with like")
    return GrownRuns(
        task=str(summaries[0]["task"]),
        epochs=int(summaries[0]["epochs"]),
        seeds=[int(s["seed"]) for s in summaries],
        total_params=[int(s["total_params"]) for s in summaries],
        accuracy=[float(s["final_val_accuracy"]) for s in summaries],
    )


@dataclass(frozen=True)
class StaticMatched:
    """Static runs at the bracketing widths and the accuracy interpolated at the grown size."""

    target_params: float
    widths: tuple[int, int]
    params: tuple[int, int]
    accuracy: tuple[list[float], list[float]]  # per seed, low width then high width
    interpolated: list[float]  # per seed

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_params": self.target_params,
            "brackets": [
                {"width": w, "params": p, "final_val_accuracy": a}
                for w, p, a in zip(self.widths, self.params, self.accuracy, strict=True)
            ],
            "final_val_accuracy": self.interpolated,
        }


def run_static_matched(grown: GrownRuns, parent: Path, *, quiet: bool = True) -> StaticMatched:
    """Train static hosts at the two widths bracketing ``grown``'s mean size, on its seeds."""
    target = grown.mean_params
    widths = bracket_widths(grown.task, target)
    configs = {
        width: [
            RunConfig(
                task=grown.task,
                controller="static",
                epochs=grown.epochs,
                seed=seed,
                quiet=quiet,
                host_channels=width,
                out=str(parent / f"static-w{width}-seed{seed}"),
            )
            for seed in grown.seeds
        ]
        for width in dict.fromkeys(widths)
    }
    accuracy = {
        w: [float(run_training(c, StaticPolicy())["final_val_accuracy"]) for c in cs]
        for w, cs in configs.items()
    }
    params = tuple(static_params(grown.task, w) for w in widths)
    low, high = (accuracy[w] for w in widths)
    interpolated = [
        interpolate_accuracy(target, StaticPoint(params[0], a), StaticPoint(params[1], b))
        for a, b in zip(low, high, strict=True)
    ]
    return StaticMatched(target, widths, (params[0], params[1]), (low, high), interpolated)

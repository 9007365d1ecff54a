"""Accuracy against size and compute: grown runs next to the static curve.

``esper report`` groups its runs: static runs by size (one point per width of the static curve),
the others by controller. For each grown group it shows the static accuracy interpolated at the
group's mean size (static-matched) and the training FLOPs each needs to reach a target accuracy
(default: the final accuracy of static-large, the smallest static model at least as big as the
grown one), read from the mean validation curve over the group's runs and their cumulative
``train_flops`` from the ``epoch_end`` events.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper.karn.baselines import StaticPoint, bracket, flops_to_reach, interpolate_accuracy, mean_curve
from esper.karn.compare import compare_runs
from esper.karn.history import load_history
from esper.nissa.io import atomic_write_bytes

__all__ = ["Group", "GrowthComparison", "compare_growth", "format_growth_table", "write_params_plot"]


@dataclass(frozen=True)
class Group:
    """Runs of one task and controller (static: of one size), with their curves."""

    task: str
    controller: str
    params: list[int]  # final total_params per run
    accuracy: list[float]  # final validation accuracy per run
    curve_accuracy: list[float]  # mean validation accuracy per epoch
    curve_flops: list[float]  # mean cumulative training FLOPs per epoch

    @property
    def mean_params(self) -> float:
        return statistics.fmean(self.params)

    @property
    def mean_accuracy(self) -> float:
        return statistics.fmean(self.accuracy)

    @property
    def is_static(self) -> bool:
        return self.controller == "static"

    def flops_to(self, target: float) -> float | None:
        return flops_to_reach(self.curve_accuracy, self.curve_flops, target)


@dataclass(frozen=True)
class GrowthComparison:
    """One grown group against the static curve of its task."""

    grown: Group
    matched_accuracy: float | None  # None: the static runs do not bracket the grown size
    static_large: Group | None
    target_accuracy: float | None
    grown_flops: float | None
    static_large_flops: float | None


def _groups(run_dirs: Sequence[Path]) -> list[Group]:
    members: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in compare_runs(run_dirs):
        size = int(row["total_params"]) if row["controller"] == "static" else -1  # a static curve point
        members.setdefault((str(row["task"]), str(row["controller"]), size), []).append(row)
    groups = []
    for (task, controller, _), rows in members.items():
        histories = [load_history(row["run_dir"]).series() for row in rows]
        acc, flops = mean_curve(
            [[e.val_accuracy for e in h] for h in histories], [[e.train_flops for e in h] for h in histories]
        )
        params = [int(row["total_params"]) for row in rows]
        groups.append(
            Group(task, controller, params, [float(row["final_val_accuracy"]) for row in rows], acc, flops)
        )
    return sorted(groups, key=lambda g: (g.task, not g.is_static, g.mean_params, g.controller))


def _static_large(grown: Group, statics: list[Group]) -> Group | None:
    bigger = [g for g in statics if g.mean_params >= grown.mean_params]
    return min(bigger, key=lambda g: g.mean_params) if bigger else None


def compare_growth(
    run_dirs: Sequence[str | os.PathLike[str]], target_accuracy: float | None = None
) -> tuple[list[Group], list[GrowthComparison]]:
    """Groups of the runs, and each grown group against its task's static runs.

    Raises:
        RunDirError: a run's summary.json or events.jsonl is missing or corrupted.
    """
    groups = _groups([Path(d) for d in run_dirs])
    comparisons = []
    for grown in (g for g in groups if not g.is_static):
        statics = [g for g in groups if g.is_static and g.task == grown.task]
        points = [StaticPoint(g.mean_params, g.mean_accuracy) for g in statics]
        try:
            matched: float | None = interpolate_accuracy(
                grown.mean_params, *bracket(grown.mean_params, points)
            )
        except ValueError:
            matched = None
        large = _static_large(grown, statics)
        target = target_accuracy if target_accuracy is not None else (large.mean_accuracy if large else None)
        comparisons.append(
            GrowthComparison(
                grown,
                matched,
                large,
                target,
                None if target is None else grown.flops_to(target),
                None if target is None or large is None else large.flops_to(target),
            )
        )
    return groups, comparisons


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_growth_table(groups: Sequence[Group], comparisons: Sequence[GrowthComparison]) -> str:
    """Plain text: every group's parameters next to its accuracy, then each grown group's
    static-matched accuracy and FLOPs to the target."""
    lines = [f"{'task':<16} {'controller':<12} {'runs':>4} {'params':>8} {'final acc':>16}"]
    for g in groups:
        std = statistics.stdev(g.accuracy) if len(g.accuracy) > 1 else 0.0
        lines.append(
            f"{g.task:<16} {g.controller:<12} {len(g.params):>4} {g.mean_params:>8.0f} "
            f"{g.mean_accuracy:>7.4f} +- {std:.4f}"
        )
    for c in comparisons:
        g, large = c.grown, c.static_large
        lines.append(
            f"{g.task} {g.controller}: {g.mean_params:.0f} params, accuracy {g.mean_accuracy:.4f}; "
            f"static-matched {_num(c.matched_accuracy, '.4f')}"
            + (
                ""
                if c.matched_accuracy is None
                else f" (grown - matched {g.mean_accuracy - c.matched_accuracy:+.4f})"
            )
        )
        if c.target_accuracy is not None:
            lines.append(
                f"  FLOPs to accuracy {c.target_accuracy:.4f}: {g.controller} {_num(c.grown_flops, '.3g')}, "
                f"static-large ({_num(large.mean_params if large else None, '.0f')} params) "
                f"{_num(c.static_large_flops, '.3g')}  (- = not reached)"
            )
    return "\n".join(lines) + "\n"


def write_params_plot(
    groups: Sequence[Group], comparisons: Sequence[GrowthComparison], out_path: str | os.PathLike[str]
) -> Path:
    """Two panels: final accuracy against parameters (static curve and grown points), and mean
    validation accuracy against cumulative training FLOPs."""
    from matplotlib.figure import Figure  # lazily: the table needs no plotting library

    from esper.karn.report import figure_png

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_params, ax_flops = fig.subplots(1, 2)
    for task in sorted({g.task for g in groups}):
        statics = [g for g in groups if g.is_static and g.task == task]
        if statics:
            ax_params.errorbar(
                [g.mean_params for g in statics],
                [g.mean_accuracy for g in statics],
                yerr=[statistics.stdev(g.accuracy) if len(g.accuracy) > 1 else 0.0 for g in statics],
                marker="o", capsize=3, label=f"{task}: static",
            )  # fmt: skip
    for g in (g for g in groups if not g.is_static):
        ax_params.scatter(g.params, g.accuracy, marker="*", s=60, label=f"{g.task}: {g.controller}")
    for g in groups:
        ax_flops.plot(g.curve_flops, g.curve_accuracy, label=f"{g.controller} ({g.mean_params:.0f} params)")
    for c in comparisons:
        if c.target_accuracy is not None:
            ax_flops.axhline(c.target_accuracy, color="gray", ls=":", lw=1)
    ax_params.set(xlabel="final parameters", ylabel="final val accuracy", xscale="log")
    ax_flops.set(xlabel="training FLOPs (cumulative)", ylabel="val accuracy (mean over runs)")
    for ax in (ax_params, ax_flops):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return atomic_write_bytes(out_path, figure_png(fig))

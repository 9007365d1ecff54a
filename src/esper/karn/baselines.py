"""Honest baselines as numbers: accuracy interpolated in parameters, FLOPs to reach an accuracy.

Pure functions over floats and event series, shared by ``esper eval --controller static-matched``,
``esper report`` and ``benchmarks/growth_vs_static.py``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["StaticPoint", "bracket", "flops_to_reach", "interpolate_accuracy", "mean_curve"]


@dataclass(frozen=True)
class StaticPoint:
    """A static model's size and accuracy (one width; accuracy may be a mean over seeds)."""

    params: float
    accuracy: float


def bracket(target_params: float, points: Sequence[StaticPoint]) -> tuple[StaticPoint, StaticPoint]:
    """The static points just below and just above ``target_params`` (both the same on a tie).

    Raises:
        ValueError: no points, or ``target_params`` outside their range (a baseline that would
            need extrapolation is not a baseline).
    """
    if not points:
        raise ValueError("no static points to bracket with")
    below = [p for p in points if p.params <= target_params]
    above = [p for p in points if p.params >= target_params]
    if not below or not above:
        sizes = sorted(p.params for p in points)
        raise ValueError(
            f"{target_params:.0f} parameters is outside the static widths' range "
            f"{sizes[0]:.0f}..{sizes[-1]:.0f}; train static models that bracket it"
        )
    return max(below, key=lambda p: p.params), min(above, key=lambda p: p.params)


def interpolate_accuracy(target_params: float, low: StaticPoint, high: StaticPoint) -> float:
    """Accuracy at ``target_params`` on the straight line between two static points.

    ``low`` and ``high`` bracket the target (``low.params <= target_params <= high.params``);
    equal sizes give their mean accuracy.
    """
    if not low.params <= target_params <= high.params:
        raise ValueError(
            f"target {target_params} is not between the bracket's sizes {low.params} and {high.params}"
        )
    if high.params == low.params:
        return (low.accuracy + high.accuracy) / 2
    t = (target_params - low.params) / (high.params - low.params)
    return low.accuracy + t * (high.accuracy - low.accuracy)


def flops_to_reach(accuracy: Sequence[float], flops: Sequence[float], target: float) -> float | None:
    """Cumulative training FLOPs at the first epoch whose validation accuracy reaches ``target``.

    ``accuracy[i]`` and ``flops[i]`` are epoch ``i``'s validation accuracy and cumulative
    training FLOPs (as in the ``epoch_end`` events); None when the target is never reached.
    """
    for acc, cumulative in zip(accuracy, flops, strict=True):
        if acc >= target:
            return cumulative
    return None


def mean_curve(
    accuracy: Sequence[Sequence[float]], flops: Sequence[Sequence[float]]
) -> tuple[list[float], list[float]]:
    """Per-epoch means over runs of validation accuracy and cumulative FLOPs.

    Runs of different lengths are cut to the shortest (the epochs all of them have).
    """
    if not accuracy:
        return [], []
    n = min(len(a) for a in [*accuracy, *flops])
    acc = [statistics.fmean(run[i] for run in accuracy) for i in range(n)]
    fl = [statistics.fmean(run[i] for run in flops) for i in range(n)]
    return acc, fl

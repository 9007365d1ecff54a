"""The alpha schedule: a small state machine that ramps a seed's alpha along a curve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from esper.leyline.alpha import AlphaCurve, AlphaMode

__all__ = ["AlphaController", "curve_progress"]


def _check_unit(name: str, value: float) -> float:
    """``value`` clamped to [0, 1]; NaN (or a non-number) is an error naming the field."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if math.isnan(v):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return min(max(v, 0.0), 1.0)


def _logistic(z: float) -> float:
    """Numerically stable logistic: never overflows for any finite ``z``."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def curve_progress(curve: AlphaCurve, t: float, steepness: float = 12.0) -> float:
    """Fraction of the way from start to target at time ``t`` in [0, 1]; 0 at 0 and 1 at 1.

    LINEAR is ``t``; COSINE is ``(1 - cos(pi t)) / 2`` (zero slope at both ends); SIGMOID is the
    logistic with ``steepness`` rescaled to pass through 0 and 1.
    """
    t = min(max(t, 0.0), 1.0)
    if curve == AlphaCurve.LINEAR:
        return t
    if curve == AlphaCurve.COSINE:
        return 0.5 * (1.0 - math.cos(math.pi * t))
    lo = _logistic(-0.5 * steepness)
    span = _logistic(0.5 * steepness) - lo
    if span < 1e-12:  # steepness -> 0: the normalised logistic tends to the line
        return t
    return min(max((_logistic(steepness * (t - 0.5)) - lo) / span, 0.0), 1.0)


@dataclass(slots=True)
class AlphaController:
    """Ramps ``alpha`` from ``alpha_start`` to ``alpha_target`` over ``alpha_steps_total`` ticks.

    Values are clamped to [0, 1] on construction; NaN is an error. ``step()`` is monotone in
    the direction of travel, never leaves the interval between start and target, and snaps to
    the target exactly on the last tick.
    """

    alpha: float = 0.0
    alpha_start: float = 0.0
    alpha_target: float = 0.0
    alpha_mode: AlphaMode = AlphaMode.HOLD
    alpha_curve: AlphaCurve = AlphaCurve.LINEAR
    alpha_steepness: float = 12.0
    alpha_steps_total: int = 0
    alpha_steps_done: int = 0

    def __post_init__(self) -> None:
        self.alpha = _check_unit("alpha", self.alpha)
        self.alpha_start = _check_unit("alpha_start", self.alpha_start)
        self.alpha_target = _check_unit("alpha_target", self.alpha_target)
        self.alpha_mode = AlphaMode(self.alpha_mode)
        self.alpha_curve = AlphaCurve(self.alpha_curve)
        self.alpha_steepness = _check_steepness(self.alpha_steepness)
        self.alpha_steps_total = _check_steps("alpha_steps_total", self.alpha_steps_total)
        self.alpha_steps_done = min(
            _check_steps("alpha_steps_done", self.alpha_steps_done), self.alpha_steps_total
        )

    def retarget(
        self,
        *,
        alpha_target: float,
        alpha_steps_total: int,
        alpha_curve: AlphaCurve | None = None,
        alpha_steepness: float | None = None,
    ) -> None:
        """Start a ramp from the current alpha; only from HOLD. Zero steps snaps at once."""
        if self.alpha_mode != AlphaMode.HOLD:
            raise ValueError(
                f"retarget() is only allowed from HOLD, but a ramp is in progress "
                f"({self.alpha_mode.name}, {self.alpha_steps_done}/{self.alpha_steps_total} steps); "
                "wait until step() returns True"
            )
        target = _check_unit("alpha_target", alpha_target)
        steps = _check_steps("alpha_steps_total", alpha_steps_total)
        curve = self.alpha_curve if alpha_curve is None else AlphaCurve(alpha_curve)
        steep = self.alpha_steepness if alpha_steepness is None else _check_steepness(alpha_steepness)
        self.alpha_curve, self.alpha_steepness = curve, steep
        self.alpha_start, self.alpha_target = self.alpha, target
        self.alpha_steps_done = 0
        if steps == 0 or target == self.alpha:
            self.alpha, self.alpha_steps_total, self.alpha_mode = target, 0, AlphaMode.HOLD
            return
        self.alpha_steps_total = steps
        self.alpha_mode = AlphaMode.UP if target > self.alpha else AlphaMode.DOWN

    def step(self) -> bool:
        """One tick along the curve; True on the tick that reaches the target."""
        if self.alpha_mode == AlphaMode.HOLD:
            return False
        self.alpha_steps_done += 1
        if self.alpha_steps_done >= self.alpha_steps_total:
            self.alpha, self.alpha_mode = self.alpha_target, AlphaMode.HOLD
            return True
        frac = curve_progress(
            self.alpha_curve, self.alpha_steps_done / self.alpha_steps_total, self.alpha_steepness
        )
        new = self.alpha_start + (self.alpha_target - self.alpha_start) * frac
        lo, hi = sorted((self.alpha_start, self.alpha_target))
        new = min(max(new, lo), hi)
        up = self.alpha_mode == AlphaMode.UP
        self.alpha = max(self.alpha, new) if up else min(self.alpha, new)
        return False

    def hold_at(self, alpha: float) -> None:
        """Stop any ramp and hold at ``alpha`` (clamped; NaN is an error)."""
        value = _check_unit("alpha", alpha)
        self.alpha = self.alpha_start = self.alpha_target = value
        self.alpha_mode, self.alpha_steps_total, self.alpha_steps_done = AlphaMode.HOLD, 0, 0

    @property
    def at_target(self) -> bool:
        """True when no ramp is in progress and alpha sits on its target."""
        return self.alpha_mode == AlphaMode.HOLD and self.alpha == self.alpha_target

    def to_dict(self) -> dict[str, Any]:
        """Primitives only; ``from_dict(to_dict())`` is an exact copy."""
        return {
            "alpha": self.alpha,
            "alpha_start": self.alpha_start,
            "alpha_target": self.alpha_target,
            "alpha_mode": int(self.alpha_mode),
            "alpha_curve": int(self.alpha_curve),
            "alpha_steepness": self.alpha_steepness,
            "alpha_steps_total": self.alpha_steps_total,
            "alpha_steps_done": self.alpha_steps_done,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlphaController:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error."""
        expected = set(cls.__dataclass_fields__)
        if set(data) != expected:
            raise ValueError(
                f"alpha controller state has keys {sorted(data)}, expected {sorted(expected)}"
            )
        return cls(**data)


def _check_steepness(value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"alpha_steepness must be a finite number > 0, got {value!r}")
    return v


def _check_steps(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value

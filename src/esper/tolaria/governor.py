"""The governor: detects divergence (NaN/Inf, a loss spike, or a loss no classifier should
reach) so the engine can roll back."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

__all__ = ["CEILING_MARGIN", "Governor", "loss_ceiling"]

CEILING_MARGIN = 3.0
"""How far above ``log(num_classes)`` (the cross-entropy of a uniform guess) a loss may go."""


@dataclass
class Governor:
    """Watches the epoch training loss.

    Args:
        spike_factor: a loss above ``spike_factor`` x the median of the last ``window`` good
            losses is a spike...
        spike_margin: ...if it is also more than ``spike_margin`` above that median: near
            convergence (losses ~0.01) ordinary noise triples the loss without any divergence.
        window: how many recent good losses the median uses.
        min_history: spikes are only judged once this many good losses are known.
        ceiling: a loss above it is divergence from the first epoch on, history or not
            (``--lr 100`` reaches losses in the thousands at epoch 0); None: no absolute
            limit. For a cross-entropy loss, :func:`loss_ceiling` of the class count.
    """

    spike_factor: float = 3.0
    spike_margin: float = 0.1
    window: int = 5
    min_history: int = 2
    ceiling: float | None = None

    def __post_init__(self) -> None:
        self.losses: list[float] = []
        self.rollbacks = 0

    def verdict(self, loss: float) -> str | None:
        """Why ``loss`` is bad (``"non-finite loss"`` / ``"loss ... above the ceiling"`` /
        ``"loss spike"``), or None when fine."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if self.ceiling is not None and loss > self.ceiling:
            return f"loss {loss:.4g} above the ceiling {self.ceiling:.4g} (far worse than a uniform guess)"
        recent = self.losses[-self.window :]
        if len(recent) >= self.min_history:
            median = statistics.median(recent)
            if loss > self.spike_factor * median and loss > median + self.spike_margin:
                return f"loss spike: {loss:.4g} > {self.spike_factor} x median {median:.4g}"
        return None

    def accept(self, loss: float) -> None:
        """Record a good epoch's loss."""
        self.losses.append(float(loss))
        del self.losses[: -self.window]

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = [float(v) for v in state["losses"]]
        self.rollbacks = int(state["rollbacks"])


def loss_ceiling(num_classes: int, margin: float = CEILING_MARGIN) -> float:
    """``log(num_classes) + margin``: a cross-entropy this far above a uniform guess is a blow-up."""
    return math.log(num_classes) + margin

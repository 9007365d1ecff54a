"""The lifecycle action space shared by every controller (heuristic, learned policy, environment).

A controller returns one :class:`Action` per host epoch. The learned policy picks it through
factored heads (``HEADS``); ``OP_HEADS`` says which heads an operation actually uses, so that
log-probabilities and entropies are summed over those heads only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve


class LifecycleOp(IntEnum):
    """What a controller can do to a slot in one step."""

    WAIT = 0
    GERMINATE = 1
    ADVANCE = 2
    SET_ALPHA_TARGET = 3
    PRUNE = 4
    FOSSILIZE = 5


BLEND_STYLES: tuple[tuple[AlphaCurve, AlphaAlgorithm], ...] = tuple(
    (curve, algorithm) for algorithm in AlphaAlgorithm for curve in AlphaCurve
)
"""Every (curve, algorithm) pair, indexed by the ``style`` head."""

TEMPO_EPOCHS: tuple[int, ...] = (3, 5, 8)
"""Blend lengths in host epochs, indexed by the ``tempo`` head."""

ALPHA_TARGETS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
"""Alpha targets for SET_ALPHA_TARGET, indexed by the ``alpha_target`` head."""

HEADS: tuple[str, ...] = ("op", "slot", "blueprint", "style", "tempo", "alpha_target")
"""Names of the factored action heads, in the order of a ``MultiDiscrete`` action vector."""

OP_HEADS: dict[LifecycleOp, tuple[str, ...]] = {
    LifecycleOp.WAIT: ("op",),
    LifecycleOp.GERMINATE: ("op", "slot", "blueprint", "style", "tempo"),
    LifecycleOp.ADVANCE: ("op", "slot"),
    LifecycleOp.SET_ALPHA_TARGET: ("op", "slot", "tempo", "alpha_target"),
    LifecycleOp.PRUNE: ("op", "slot"),
    LifecycleOp.FOSSILIZE: ("op", "slot"),
}
"""The heads each operation reads; the others are ignored (and masked out of log-probs)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One lifecycle decision. Fields an operation does not use are ignored.

    Attributes:
        op: the operation.
        slot: the target slot id (e.g. ``"r0c1"``); None for WAIT.
        blueprint: blueprint name for GERMINATE.
        alpha_algorithm: blend algorithm for GERMINATE (not read for a width blueprint, whose
            new units' term is always added: the engine germinates it with ADD).
        alpha_curve: alpha ramp curve for GERMINATE.
        tempo_epochs: blend length in epochs for GERMINATE / SET_ALPHA_TARGET.
        alpha_target: target alpha for SET_ALPHA_TARGET.
    """

    op: LifecycleOp
    slot: str | None = None
    blueprint: str | None = None
    alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    alpha_curve: AlphaCurve = AlphaCurve.LINEAR
    tempo_epochs: int = 5
    alpha_target: float = 1.0

    def to_dict(self) -> dict[str, object]:
        """Primitives only, for events and checkpoints."""
        return {
            "op": self.op.name,
            "slot": self.slot,
            "blueprint": self.blueprint,
            "alpha_algorithm": self.alpha_algorithm.name,
            "alpha_curve": self.alpha_curve.name,
            "tempo_epochs": self.tempo_epochs,
            "alpha_target": self.alpha_target,
        }


WAIT = Action(LifecycleOp.WAIT)
"""The do-nothing action."""

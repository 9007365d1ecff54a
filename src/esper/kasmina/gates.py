"""Quality gates: the checks a seed must pass to move to its next lifecycle stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from esper.leyline.stages import SeedStage

__all__ = ["GateResult", "QualityGates", "SeedMetrics"]


@dataclass(frozen=True, slots=True)
class QualityGates:
    """Thresholds for the lifecycle gates.

    Attributes:
        min_training_epochs: ``step_epoch()`` calls in TRAINING before G2 (blending) passes.
        min_holding_epochs: ``step_epoch()`` calls in HOLDING before G5 (fossilize) passes.
        min_fossilize_contribution: counterfactual contribution G5 requires (strictly above).
        embargo_epochs: ``step_epoch()`` calls spent EMBARGOED after a prune.
        permissive: keep only the safety checks (seed present, finite gradients and
            contribution, alpha at target) and drop the waiting periods and thresholds.
    """

    min_training_epochs: int = 3
    min_holding_epochs: int = 1
    min_fossilize_contribution: float = 0.0
    embargo_epochs: int = 5
    permissive: bool = False

    def __post_init__(self) -> None:
        for name in ("min_training_epochs", "min_holding_epochs", "embargo_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"QualityGates.{name} must be an int >= 0, got {value!r}")
        c = self.min_fossilize_contribution
        if not isinstance(c, int | float) or c != c:
            raise ValueError(f"QualityGates.min_fossilize_contribution must be a number, got {c!r}")
        if not isinstance(self.permissive, bool):
            raise ValueError(f"QualityGates.permissive must be True or False, got {self.permissive!r}")


@dataclass(frozen=True, slots=True)
class GateResult:
    """Outcome of a gate check.

    Attributes:
        passed: True when every check passed and the transition happened.
        gate: gate name (``"G1"`` .. ``"G5"``).
        target_stage: the stage the slot would move to.
        checks_failed: a human-readable line per failed check (empty when passed).
    """

    passed: bool
    gate: str
    target_stage: SeedStage
    checks_failed: tuple[str, ...] = ()


@dataclass(slots=True)
class SeedMetrics:
    """What the slot knows about its seed's progress; primitives only (checkpointed).

    Attributes:
        counterfactual_contribution: validation metric with the seed as is minus with its alpha
            at 0; set by the trainer, None until measured.
        epochs_total: ``step_epoch()`` calls since germination.
        grad_steps: TRAINING backwards that reached the seed's parameters.
        grad_steps_finite: of those, how many gave every seed parameter a finite gradient
            (a lower bound, counted per parameter on the device without host syncs).
        prune_reason: why the seed was pruned, if it was.
    """

    counterfactual_contribution: float | None = None
    epochs_total: int = 0
    grad_steps: int = 0
    grad_steps_finite: int = 0
    prune_reason: str = ""
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "counterfactual_contribution": self.counterfactual_contribution,
            "epochs_total": self.epochs_total,
            "grad_steps": self.grad_steps,
            "grad_steps_finite": self.grad_steps_finite,
            "prune_reason": self.prune_reason,
            "history": list(self.history),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SeedMetrics:
        c = data["counterfactual_contribution"]
        history = data["history"]
        if not isinstance(history, list):
            raise ValueError(f"metrics.history must be a list, got {history!r}")
        return cls(
            counterfactual_contribution=None if c is None else float(c),  # type: ignore[arg-type]
            epochs_total=int(data["epochs_total"]),  # type: ignore[call-overload]
            grad_steps=int(data["grad_steps"]),  # type: ignore[call-overload]
            grad_steps_finite=int(data["grad_steps_finite"]),  # type: ignore[call-overload]
            prune_reason=str(data["prune_reason"]),
            history=[float(h) for h in history],
        )

"""Quality gates: the checks a seed must pass to move to its next lifecycle stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from esper.errors import IllegalTransitionError, plural
from esper.leyline.stages import VALID_TRANSITIONS, SeedStage, is_failure_stage, is_valid_transition

if TYPE_CHECKING:  # slot_state imports SeedMetrics from here
    from esper.kasmina.slot_state import SlotState

__all__ = [
    "GateResult",
    "QualityGates",
    "SeedMetrics",
    "enum_value",
    "gate_failures",
    "gate_name",
    "resolve_target",
]


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


def gate_failures(
    gates: QualityGates,
    state: SlotState,
    current: SeedStage,
    target: SeedStage,
    *,
    has_seed: bool,
    needs_gradients: bool,
    pending_grad_steps: tuple[int, int] = (0, 0),
) -> list[str]:
    """Failed checks for moving a slot ``current -> target`` (empty: the gate passes).

    Args:
        gates: the thresholds.
        state: the slot's state.
        current: the slot's stage.
        target: the stage asked for.
        has_seed: the slot holds a seed.
        needs_gradients: the seed has trainable parameters (G2 is vacuous otherwise).
        pending_grad_steps: (backwards, finite ones) gathered but not yet in ``state.metrics``.
    """
    strict = not gates.permissive
    failed = [] if has_seed else ["no seed in the slot"]
    if target == SeedStage.BLENDING and current == SeedStage.TRAINING:
        m, (events, finite) = state.metrics, pending_grad_steps
        if strict and state.epochs_in_stage < gates.min_training_epochs:
            trained = plural(state.epochs_in_stage, "epoch")
            failed.append(f"trained {trained} in TRAINING, needs {gates.min_training_epochs}")
        if needs_gradients and m.grad_steps_finite + finite == 0:
            failed.append(
                f"no backward has reached every seed parameter with finite gradients since "
                f"TRAINING began ({m.grad_steps + events} backward(s) seen)"
            )
    elif target == SeedStage.HOLDING and not state.alpha_controller.at_target:
        ctl = state.alpha_controller
        failed.append(f"alpha {ctl.alpha:.4f} has not reached its target {ctl.alpha_target:.4f}")
    elif target == SeedStage.FOSSILIZED:
        failed.extend(_fossilize_failures(gates, state, strict))
    return failed


def _fossilize_failures(gates: QualityGates, state: SlotState, strict: bool) -> list[str]:
    c = state.metrics.counterfactual_contribution
    failed = []
    if strict and state.epochs_in_stage < gates.min_holding_epochs:
        failed.append(
            f"held {plural(state.epochs_in_stage, 'epoch')} in HOLDING, needs {gates.min_holding_epochs}"
        )
    if c is None:
        if strict:
            failed.append("counterfactual contribution has not been measured")
    elif c != c:
        failed.append("counterfactual contribution is NaN")
    elif strict and not c > gates.min_fossilize_contribution:
        failed.append(f"contribution {c:.4g} is not above {gates.min_fossilize_contribution:.4g}")
    return failed


_NEXT_STAGE = {
    SeedStage.GERMINATED: SeedStage.TRAINING,
    SeedStage.TRAINING: SeedStage.BLENDING,
    SeedStage.BLENDING: SeedStage.HOLDING,
    SeedStage.HOLDING: SeedStage.FOSSILIZED,
}
_GATE_NAMES = {
    SeedStage.TRAINING: "G1",
    SeedStage.BLENDING: "G2",
    SeedStage.HOLDING: "G3",
    SeedStage.FOSSILIZED: "G5",
}


def gate_name(current: SeedStage, target: SeedStage) -> str:
    """The gate guarding ``current -> target`` (G4 is HOLDING -> BLENDING, a re-blend)."""
    if target == SeedStage.BLENDING and current == SeedStage.HOLDING:
        return "G4"
    return _GATE_NAMES[target]


def resolve_target(slot_id: str, current: SeedStage, target: SeedStage | int | None) -> SeedStage:
    """The stage ``advance_stage(target)`` moves to; an illegal ask is an IllegalTransitionError.

    None means the next stage along GERMINATED -> ... -> FOSSILIZED. The failure cycle
    (PRUNED -> EMBARGOED -> RESETTING -> DORMANT) advances only with ``step_epoch()``, and a
    seed enters GERMINATED only through ``germinate()``.
    """
    if target is None:
        nxt = _NEXT_STAGE.get(current)
        if nxt is None:
            raise IllegalTransitionError(
                f"slot {slot_id!r} is {current.name}: there is no next stage to advance to"
            )
        return nxt
    stage: SeedStage = enum_value(SeedStage, target)
    if not is_valid_transition(current, stage):
        allowed = sorted(s.name for s in VALID_TRANSITIONS[current])
        raise IllegalTransitionError(
            f"slot {slot_id!r} cannot go {current.name} -> {stage.name}; allowed from "
            f"{current.name}: {allowed}"
        )
    if is_failure_stage(current):
        raise IllegalTransitionError(
            f"slot {slot_id!r} is {current.name}: the embargo advances with step_epoch()"
        )
    if stage == SeedStage.GERMINATED:
        raise IllegalTransitionError(
            f"slot {slot_id!r} is {current.name}: a seed enters GERMINATED through "
            f"germinate(blueprint_id), not advance_stage()"
        )
    return stage


def enum_value(kind: Any, value: Any) -> Any:
    """``kind(value)`` with an error that lists the valid members."""
    try:
        return kind(value)
    except ValueError:
        names = [m.name for m in kind]
        raise ValueError(f"{value!r} is not a valid {kind.__name__}; valid: {names}") from None

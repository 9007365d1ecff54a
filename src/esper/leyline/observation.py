"""What a controller sees at the end of each host epoch (pure data), and the ``Policy`` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from esper.leyline.actions import Action
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

__all__ = ["Observation", "Policy", "SlotObservation"]


@dataclass(frozen=True, slots=True)
class SlotObservation:
    """One slot at the end of an epoch.

    Attributes:
        slot_id: e.g. ``"r0c1"``.
        channels: feature width at the slot.
        stage: lifecycle stage (DORMANT when empty).
        blueprint: blueprint of the seed, None when empty.
        alpha: current blend weight.
        alpha_target: where the alpha ramp is heading.
        alpha_algorithm: how the seed blends.
        epochs_in_stage: epochs since the stage began.
        contribution: last measured counterfactual contribution (accuracy with the seed minus
            without it), None until measured.
        contribution_history: every measured contribution, oldest first.
        seed_params: parameters of the seed.
        gate_ready: the gate to the next stage would pass now.
        embargo_remaining: epochs left in EMBARGOED.
    """

    slot_id: str
    channels: int
    stage: SeedStage
    blueprint: str | None = None
    alpha: float = 0.0
    alpha_target: float = 0.0
    alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    epochs_in_stage: int = 0
    contribution: float | None = None
    contribution_history: tuple[float, ...] = ()
    seed_params: int = 0
    gate_ready: bool = False
    embargo_remaining: int = 0


@dataclass(frozen=True, slots=True)
class Observation:
    """The run as a controller sees it after ``epoch`` (0-based) of ``max_epochs``.

    Histories are per epoch, oldest first, and include this epoch.
    """

    epoch: int
    max_epochs: int
    topology: str
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_accuracy_history: tuple[float, ...]
    train_loss_history: tuple[float, ...]
    host_params: int
    seed_params: int
    max_seed_params: int | None
    slots: tuple[SlotObservation, ...]
    blueprints: tuple[str, ...]
    blueprint_params: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per slot id: blueprint name -> parameter count it would add there."""
    gate_params: dict[str, int] = field(default_factory=dict)
    """Per slot id: parameters the GATE blend's gate network adds on top of the blueprint's."""

    def slot(self, slot_id: str) -> SlotObservation:
        for s in self.slots:
            if s.slot_id == slot_id:
                return s
        raise KeyError(f"no slot {slot_id!r} in the observation; slots: {[s.slot_id for s in self.slots]}")

    def plateau_epochs(self, min_delta: float) -> int:
        """Epochs since validation accuracy last beat its previous best by more than ``min_delta``."""
        best, since = float("-inf"), 0
        for acc in self.val_accuracy_history:
            if acc > best + min_delta:
                best, since = acc, 0
            else:
                since += 1
        return since


@runtime_checkable
class Policy(Protocol):
    """A controller: one lifecycle action per host epoch, with checkpointable state."""

    name: str

    def decide(self, observation: Observation) -> Action:
        """The action to apply after this epoch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Primitives and tensors only."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

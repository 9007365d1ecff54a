"""The serialisable state of a slot (primitives only, so checkpoints load with weights_only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esper.errors import CheckpointError
from esper.kasmina.alpha_controller import AlphaController
from esper.kasmina.gates import SeedMetrics
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

__all__ = ["SLOT_STATE_VERSION", "SlotState"]

SLOT_STATE_VERSION = 1


@dataclass(slots=True)
class SlotState:
    """Everything about a slot that is not a tensor.

    Attributes:
        stage: lifecycle stage.
        seed_id: id of the current (or last) seed.
        blueprint_id: blueprint of the current seed, None when empty.
        blueprint_kwargs: keyword arguments the seed was built with.
        alpha_algorithm: how the seed blends.
        blend_tempo_epochs: alpha ramp length on entering BLENDING.
        epochs_in_stage: ``step_epoch()`` calls since the stage began.
        embargo_remaining: epochs left in EMBARGOED.
        germinations: seeds germinated in this slot so far (names default seed ids).
        metrics: progress metrics of the current seed.
        alpha_controller: the alpha schedule.
        width: for a width seed, ``{"base": units before, "units": units added}`` at its site
            (kept after fossilizing: a checkpoint re-creates the widened shapes from it).
    """

    stage: SeedStage = SeedStage.DORMANT
    seed_id: str | None = None
    blueprint_id: str | None = None
    blueprint_kwargs: dict[str, Any] = field(default_factory=dict)
    alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    blend_tempo_epochs: int = 5
    epochs_in_stage: int = 0
    embargo_remaining: int = 0
    germinations: int = 0
    metrics: SeedMetrics = field(default_factory=SeedMetrics)
    alpha_controller: AlphaController = field(default_factory=AlphaController)
    width: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Primitives only."""
        return {
            "version": SLOT_STATE_VERSION,
            "stage": int(self.stage),
            "seed_id": self.seed_id,
            "blueprint_id": self.blueprint_id,
            "blueprint_kwargs": dict(self.blueprint_kwargs),
            "alpha_algorithm": int(self.alpha_algorithm),
            "blend_tempo_epochs": self.blend_tempo_epochs,
            "epochs_in_stage": self.epochs_in_stage,
            "embargo_remaining": self.embargo_remaining,
            "germinations": self.germinations,
            "metrics": self.metrics.to_dict(),
            "alpha_controller": self.alpha_controller.to_dict(),
            "width": None if self.width is None else dict(self.width),
        }

    @classmethod
    def from_dict(cls, data: Any, slot_id: str) -> SlotState:
        """Parse a checkpointed state; anything malformed is a CheckpointError naming the slot."""
        try:
            if not isinstance(data, dict) or data.get("version") != SLOT_STATE_VERSION:
                raise ValueError(f"expected a dict with version {SLOT_STATE_VERSION}")
            state = cls(
                stage=SeedStage(data["stage"]),
                seed_id=_opt_str(data["seed_id"]),
                blueprint_id=_opt_str(data["blueprint_id"]),
                blueprint_kwargs=dict(data["blueprint_kwargs"]),
                alpha_algorithm=AlphaAlgorithm(data["alpha_algorithm"]),
                blend_tempo_epochs=int(data["blend_tempo_epochs"]),
                epochs_in_stage=int(data["epochs_in_stage"]),
                embargo_remaining=int(data["embargo_remaining"]),
                germinations=int(data["germinations"]),
                metrics=SeedMetrics.from_dict(data["metrics"]),
                alpha_controller=AlphaController.from_dict(data["alpha_controller"]),
                width=_opt_width(data.get("width")),  # absent in checkpoints before width growth
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint state for slot {slot_id!r} is corrupted: {exc!r}"
            ) from exc
        has_seed = SeedStage.GERMINATED <= state.stage <= SeedStage.FOSSILIZED
        if has_seed != (state.blueprint_id is not None) or state.stage == SeedStage.UNKNOWN:
            raise CheckpointError(
                f"checkpoint state for slot {slot_id!r} is corrupted: stage "
                f"{state.stage.name} with blueprint {state.blueprint_id!r}"
            )
        return state


def _opt_width(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"base", "units"}:
        raise ValueError(f"expected width as {{'base': int, 'units': int}} or None, got {value!r}")
    return {"base": int(value["base"]), "units": int(value["units"])}


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a str or None, got {value!r}")
    return value

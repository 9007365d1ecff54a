"""``FlatSeedSlot``: a slot over 2-D ``(B, C)`` features, such as an MLP's hidden layer.

It is a transformer-topology slot that sees its features as a sequence of one, ``(B, 1, C)``.
Every transformer blueprint that works along the last dimension (``norm``, ``lora``, ``mlp``,
...) is then exactly right, and so are the GATE network and the per-sample ``(B, 1, 1)``
alphas of counterfactual evaluation. Blueprints that mix positions along the sequence
(``needs_sequence``, e.g. ``attention``) would see a sequence of one: they are refused.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from esper.errors import CheckpointError, IncompatibleBlueprintError, ShapeError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.gates import QualityGates
from esper.kasmina.slot import SeedSlot
from esper.kasmina.slot_state import SlotState
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve

__all__ = ["FlatSeedSlot"]


class FlatSeedSlot(SeedSlot):
    """A seed slot whose host features are ``(B, C)``; ``topology`` is ``"transformer"``.

    Args:
        slot_id: the slot's id.
        channels: feature width ``C``.
        gates: quality-gate thresholds.
        isolate_blend_input: as for :class:`SeedSlot` (default False, as for transformers).
    """

    def __init__(
        self,
        slot_id: str,
        channels: int,
        *,
        gates: QualityGates | None = None,
        isolate_blend_input: bool | None = None,
    ) -> None:
        super().__init__(
            slot_id, channels, "transformer", gates=gates, isolate_blend_input=isolate_blend_input
        )

    def blueprint_names(self) -> list[str]:
        """Transformer blueprints that work along the last dimension only."""
        return [
            b for b in super().blueprint_names() if not BlueprintRegistry.get(self.topology, b).needs_sequence
        ]

    def germinate(
        self,
        blueprint_id: str,
        seed_id: str | None = None,
        *,
        alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
        alpha_curve: AlphaCurve = AlphaCurve.LINEAR,
        blend_tempo_epochs: int = 5,
        blueprint_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """As :meth:`SeedSlot.germinate`; a blueprint that needs a sequence is refused first."""
        if BlueprintRegistry.get(self.topology, blueprint_id).needs_sequence:
            raise IncompatibleBlueprintError(
                f"blueprint {blueprint_id!r} mixes positions along a sequence (B, T, C), but slot "
                f"{self.slot_id!r} holds 2-D (B, C) features; blueprints for this slot: "
                f"{self.blueprint_names()}"
            )
        super().germinate(
            blueprint_id,
            seed_id,
            alpha_algorithm=alpha_algorithm,
            alpha_curve=alpha_curve,
            blend_tempo_epochs=blend_tempo_epochs,
            blueprint_kwargs=blueprint_kwargs,
        )

    def forward(self, host_features: Tensor) -> Tensor:
        """``(B, C)`` in, ``(B, C)`` out (views: no copy for the added sequence dimension)."""
        return super().forward(host_features.unsqueeze(1)).squeeze(1)

    def _check_features(self, x: Tensor) -> None:
        shape = x.shape  # (B, 1, C) for (B, C) features
        if len(shape) != 3 or shape[1] != 1 or shape[2] != self.channels:
            raise ShapeError(
                f"slot {self.slot_id!r} expects 2-D features (B, C) with C={self.channels}, "
                f"got shape {tuple(x.squeeze(1).shape)}"
            )

    def _parse_extra_state(self, state: Any) -> SlotState:
        new = super()._parse_extra_state(state)
        if new.blueprint_id is not None and new.blueprint_id not in self.blueprint_names():
            raise CheckpointError(
                f"checkpoint state for slot {self.slot_id!r} is corrupted: blueprint "
                f"{new.blueprint_id!r} cannot hold 2-D (B, C) features"
            )
        return new

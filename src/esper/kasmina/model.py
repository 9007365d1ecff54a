"""``MorphogeneticModel``: a host with a ``SeedSlot`` at each chosen injection point."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from esper.errors import CheckpointError, UnknownSlotError, did_you_mean
from esper.kasmina.gates import QualityGates
from esper.kasmina.hosts import HostBase, build_host
from esper.kasmina.slot import SeedSlot
from esper.kasmina.widening import WidthGrowth
from esper.kasmina.width import ParamRemap
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage

__all__ = ["MorphogeneticModel"]


class MorphogeneticModel(nn.Module):
    """A host network whose injection points hold seed slots.

    Args:
        host: a host (``CNNHost``, ``TransformerHost`` or any ``HostBase``).
        slots: slot ids to create (default: every injection point).
        gates: quality gates shared by every slot.
    """

    def __init__(
        self,
        host: HostBase,
        *,
        slots: Iterable[str] | None = None,
        gates: QualityGates | None = None,
    ) -> None:
        super().__init__()
        specs = host.injection_specs()
        known = [s.slot_id for s in specs]
        chosen = list(known if slots is None else slots)
        for sid in chosen:
            if sid not in known:
                raise UnknownSlotError(
                    f"unknown slot {sid!r}; this {host.topology} host has slots {known}."
                    + did_you_mean(str(sid), known)
                )
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"slots must be distinct, got {chosen}")
        self.host = host
        self.gates = gates or QualityGates()
        self._width = WidthGrowth(host)  # shared with the slots: width seeds change the host
        self.seed_slots = nn.ModuleDict(
            {
                s.slot_id: SeedSlot(
                    s.slot_id, s.channels, host.topology, gates=self.gates, width_growth=self._width
                )
                for s in specs
                if s.slot_id in chosen
            }
        )
        # Slot after each host block, None where no slot was requested (plain tuple: the
        # modules are registered once, under seed_slots).
        self._routing: tuple[SeedSlot | None, ...] = tuple(
            self._slot_or_none(s.slot_id) for s in specs
        )

    def _slot_or_none(self, slot_id: str) -> SeedSlot | None:
        if slot_id not in self.seed_slots:
            return None
        slot = self.seed_slots[slot_id]
        assert isinstance(slot, SeedSlot)
        return slot

    @property
    def topology(self) -> str:
        return self.host.topology

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` images or ``(B, T)`` tokens -> logits; wrong shapes raise ``ShapeError``."""
        host = self.host
        host.check_input(x)
        h = host.embed(x)
        if self._width.live:  # a width seed computes: the host routes its new units
            return host.forward_widened(h, self._routing)
        for block, slot in zip(host.blocks, self._routing, strict=True):
            h = block(h)
            if slot is not None and slot.active:  # an inactive slot costs nothing, not even a call
                h = slot(h)
        return host.finish(h)

    # ----------------------------------------------------------------- slots
    def slot(self, slot_id: str) -> SeedSlot:
        """The slot named ``slot_id``; an unknown id lists the known ones."""
        if slot_id not in self.seed_slots:
            known = list(self.seed_slots)
            raise UnknownSlotError(
                f"unknown slot {slot_id!r}; known slots: {known}." + did_you_mean(str(slot_id), known)
            )
        slot = self.seed_slots[slot_id]
        assert isinstance(slot, SeedSlot)
        return slot

    def slots(self) -> list[SeedSlot]:
        """Every slot, in execution order."""
        return [s for s in self._routing if s is not None]

    def germinate_seed(
        self,
        blueprint_id: str,
        seed_id: str | None = None,
        *,
        slot: str,
        alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
        alpha_curve: AlphaCurve = AlphaCurve.LINEAR,
        blend_tempo_epochs: int = 5,
        blueprint_kwargs: dict[str, Any] | None = None,
    ) -> SeedSlot:
        """Germinate ``blueprint_id`` into ``slot``; returns the slot (now GERMINATED)."""
        target = self.slot(slot)
        target.germinate(
            blueprint_id,
            seed_id,
            alpha_algorithm=alpha_algorithm,
            alpha_curve=alpha_curve,
            blend_tempo_epochs=blend_tempo_epochs,
            blueprint_kwargs=blueprint_kwargs,
        )
        return target

    def prune_seed(self, *, slot: str, reason: str = "") -> bool:
        """Prune the seed in ``slot``; False when there was none."""
        return self.slot(slot).prune(reason)

    def get_seed_parameters(self, slot: str | None = None) -> list[nn.Parameter]:
        """Seed (and gate) parameters of one slot, or of every slot."""
        chosen = [self.slot(slot)] if slot is not None else self.slots()
        return [p for s in chosen for p in s.seed_parameters()]

    def get_host_parameters(self) -> list[nn.Parameter]:
        """The host's parameters."""
        return list(self.host.parameters())

    @property
    def active_seed_params(self) -> int:
        """Parameters held by seeds currently in slots (any stage with a seed)."""
        return sum(s.seed_params for s in self.slots())

    def count_fossilized_seeds(self) -> int:
        return sum(s.stage == SeedStage.FOSSILIZED for s in self.slots())

    def take_param_remaps(self) -> list[ParamRemap]:
        """Parameters replaced by larger ones since the last call (a width seed fossilized).

        Hand them to :func:`esper.kasmina.optim_remap.carry_optimizer_state` for every optimizer.
        """
        return self._width.take_remaps()

    # ----------------------------------------------------------------- checkpoints
    def config(self) -> dict[str, Any]:
        """Primitives that rebuild an empty model of this shape (see :meth:`from_config`)."""
        return {
            "host_class": type(self.host).__name__,
            "host": self.host.config(),
            "slots": list(self.seed_slots),
            "gates": asdict(self.gates),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MorphogeneticModel:
        """Build an empty model from :meth:`config`; load a ``state_dict`` to restore seeds."""
        if config.get("injected"):  # see esper.kasmina.inject: the host is the user's own code
            raise CheckpointError(
                f"this model was made by esper.inject_slots around {config.get('host_class')!r} and "
                "cannot be rebuilt from its config alone: build that model afresh, call "
                f"esper.inject_slots(model, {config.get('target_modules')!r}, example_input=...) and "
                "load_state_dict into the result"
            )
        try:
            host = build_host(config["host_class"], dict(config["host"]))
            return cls(host, slots=config["slots"], gates=QualityGates(**config["gates"]))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"model config is incomplete or malformed: {exc!r}") from exc

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights and slot states, re-creating seeds first; all or nothing.

        A missing or corrupted slot state raises ``CheckpointError`` naming the slot, and any
        failure leaves the model exactly as it was.
        """
        for sid in self.seed_slots:
            key = f"seed_slots.{sid}._extra_state"
            if key not in state_dict:
                saved = sorted(
                    k.split(".")[1] for k in state_dict if k.endswith("._extra_state")
                )
                raise CheckpointError(
                    f"checkpoint has no state for slot {sid!r} (missing {key!r}); "
                    f"it holds slots {saved}"
                )
        parsed = {
            sid: self.slot(sid)._parse_extra_state(state_dict[f"seed_slots.{sid}._extra_state"])
            for sid in self.seed_slots
        }
        backup = {k: v.clone() if isinstance(v, Tensor) else v for k, v in self.state_dict().items()}
        # The seed modules themselves go back on failure: the optimizer holds their parameters.
        kept = [(slot, slot.state, slot.seed, slot.gate) for slot in self.slots()]
        unwiden = self._width.prepare_load(parsed)  # fossilized width growth: widen the host first
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except Exception as exc:
            unwiden()
            for slot, state, seed, gate in kept:
                slot.state, slot.seed, slot.gate = state, seed, gate
            super().load_state_dict(backup)
            raise CheckpointError(f"checkpoint does not fit this model: {exc}") from exc

    def extra_repr(self) -> str:
        return f"topology={self.topology!r}, slots={list(self.seed_slots)}"


def seed_dtype(model: MorphogeneticModel) -> torch.dtype:
    """The floating dtype of the host's parameters."""
    return next(p.dtype for p in model.host.parameters() if p.is_floating_point())

"""The model's side of width growth: one object the model and its slots share.

Width seeds change the host, not just their slot: building one needs the host's width site,
fossilizing one merges it into host layers that neighbouring width seeds also touch, and loading
a checkpoint must widen a fresh host before its tensors load. :class:`WidthGrowth` does those
things, records the parameter remaps for the optimizers, and keeps the ``live`` flag that sends
the model's forward down the host's widened route only while a width seed computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from esper.errors import CheckpointError, WidthGrowthError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.width import ParamRemap, WidthSeed, WidthSite
from esper.leyline.stages import SeedStage

if TYPE_CHECKING:  # the slot and the host hold this object; it only calls them
    from esper.kasmina.slot import SeedSlot
    from esper.kasmina.slot_state import SlotState

__all__ = ["WidthGrowth"]

_SIZE_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features")


class WidthGrowth:
    """Width growth for one host and its slots (a plain object, not a module: no state_dict).

    Args:
        host: the host whose layers grow.
    """

    def __init__(self, host: nn.Module) -> None:
        self.host = host
        self.slots: dict[str, SeedSlot] = {}
        self.live = False
        """True while some slot's width seed computes (TRAINING, BLENDING, HOLDING)."""
        self._remaps: list[ParamRemap] = []

    def add_slot(self, slot: SeedSlot) -> None:
        self.slots[slot.slot_id] = slot

    def site(self, slot_id: str) -> WidthSite:
        """Where ``slot_id`` widens the host; a host without width sites raises WidthGrowthError."""
        width_site = getattr(self.host, "width_site", None)
        if width_site is None:
            raise WidthGrowthError(
                f"slot {slot_id!r}: a {type(self.host).__name__} has no width sites (width growth "
                f"needs a CNNHost or TransformerHost)"
            )
        site: WidthSite = width_site(slot_id)
        return site

    def build(self, slot_id: str, blueprint_id: str, dim: int, kwargs: Mapping[str, Any]) -> WidthSeed:
        """A width seed of ``blueprint_id`` at ``slot_id`` (raises before changing anything)."""
        spec = BlueprintRegistry.get(str(getattr(self.host, "topology", "")), blueprint_id)
        return spec.create_width(self.site(slot_id), dim, **kwargs)

    def refresh(self) -> None:
        """Recompute :attr:`live` (slots call this when their width seed starts or stops)."""
        self.live = any(s.widening for s in self.slots.values())

    def take_remaps(self) -> list[ParamRemap]:
        """Parameter replacements since the last call, oldest first (for the optimizers)."""
        remaps, self._remaps = self._remaps, []
        return remaps

    # ----------------------------------------------------------------- fossilize
    def fossilize(self, slot_id: str, seed: WidthSeed, alpha: float) -> None:
        """Merge ``seed`` (blending at ``alpha``) into the host and grow neighbouring width seeds."""
        site = self.site(slot_id)
        producer, reader, k = site.producer, site.reader, seed.units
        neighbours = [
            (s.seed, self.site(sid))
            for sid, s in self.slots.items()
            if sid != slot_id and isinstance(s.seed, WidthSeed)
        ]
        remaps = seed.merge_into(site, alpha)
        for other, other_site in neighbours:
            assert isinstance(other, WidthSeed)
            if other_site.reader is producer:  # its reader's output grew: zero rows
                remaps.append(other.widen_output(k))
            if other_site.producer is reader:  # its producer's input grew: zero columns
                remaps.append(other.widen_input(k))
        self._remaps.extend(remaps)
        self._sync_channels()

    def _sync_channels(self) -> None:
        if not self.slots:  # no slot widens (e.g. an injected model): nothing to follow
            return
        widths = getattr(self.host, "segment_channels", None)  # a HostBase: slots widen only there
        assert isinstance(widths, dict)
        for sid, slot in self.slots.items():
            slot.channels = widths[sid]

    # ----------------------------------------------------------------- checkpoints
    def prepare_load(self, states: Mapping[str, SlotState]) -> Callable[[], None]:
        """Widen the host where ``states`` hold fossilized width growth it lacks.

        The replaced host parameters are recorded as remaps (an optimizer built before the
        load follows them). Returns a function that undoes the widening (for a load that fails
        later). A width that neither matches nor can be reached raises ``CheckpointError``
        naming the slot.
        """
        todo = [(self.site(sid), units) for sid, units in self._missing_growth(states)]
        saved: dict[nn.Module, tuple[dict[str, Any], dict[str, Any], dict[str, int]]] = {}
        recorded = len(self._remaps)
        for site, units in todo:
            for module in (site.producer, site.norm, site.reader):
                if module is not None and module not in saved:
                    saved[module] = _save(module)
            # Shapes only: the checkpoint's tensors load next.
            self._remaps.extend(WidthSeed(site, units).merge_into(site))
        self._sync_channels()

        def undo() -> None:
            for module, snapshot in saved.items():
                _restore(module, snapshot)
            del self._remaps[recorded:]
            self._sync_channels()

        return undo

    def _missing_growth(self, states: Mapping[str, SlotState]) -> list[tuple[str, int]]:
        """(slot, units) the host still lacks; raises before anything changes when one cannot fit."""
        missing = []
        for sid, new in states.items():
            slot = self.slots.get(sid)  # an injected model's slots do not widen
            ours, theirs = (None if slot is None else _width_record(slot.state)), _width_record(new)
            if theirs is None:
                if ours is not None:
                    raise CheckpointError(
                        f"slot {sid!r} of this model was widened {ours[0]} -> {sum(ours)} units; the "
                        f"checkpoint's was not: load it into a model built from its own config"
                    )
                continue
            base, units = theirs
            width = self.site(sid).width
            if width == base:
                missing.append((sid, units))
            elif width != base + units:
                raise CheckpointError(
                    f"slot {sid!r}: the checkpoint widened {base} -> {base + units} units, but this "
                    f"host has {width} there; expected {base} or {base + units}"
                )
        return missing


def _width_record(state: SlotState) -> tuple[int, int] | None:
    """(base units, added units) of a fossilized width growth, else None."""
    if state.stage != SeedStage.FOSSILIZED or state.width is None:
        return None
    return state.width["base"], state.width["units"]


def _save(module: nn.Module) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    sizes = {a: getattr(module, a) for a in _SIZE_ATTRS if hasattr(module, a)}
    return dict(module._parameters), dict(module._buffers), sizes


def _restore(module: nn.Module, snapshot: tuple[dict[str, Any], dict[str, Any], dict[str, int]]) -> None:
    params, buffers, sizes = snapshot
    module._parameters.update(params)
    module._buffers.update(buffers)
    for attr, value in sizes.items():
        setattr(module, attr, value)

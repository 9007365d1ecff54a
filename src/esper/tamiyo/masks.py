"""Legal-action masks and action-vector <-> :class:`Action` conversion for the factored heads.

Layouts:

* **Action vector**: one int per head in ``HEADS`` order (``op, slot, blueprint, style, tempo,
  alpha_target``), the ``MultiDiscrete`` action of the environment. Sizes come from
  :class:`ActionLayout` (slots and blueprints of the run).
* **Flat mask**: the per-head masks concatenated in ``HEADS`` order (sb3-contrib
  MaskablePPO's layout), True = legal.

What is legal is the table of :mod:`esper.leyline.legality` (the engine's door refuses the same).
:class:`JointLegality` holds this exactly (an ``[n_ops, n_slots]`` table plus a per-slot
blueprint table). A factored mask can only say which entries of *each head* may be chosen,
so :meth:`JointLegality.flat_mask` is the projection (union over ops): the op head allows
every op legal for some slot, the slot head every slot some legal op uses, the blueprint head
every blueprint that fits some DORMANT slot, style/tempo/alpha_target heads all entries when
an op that reads them is legal. A head that no legal op reads allows only index 0 (the
convention of :mod:`esper.tamiyo.policy_net`). Joint combinations the projection lets through
but the table refuses (e.g. ADVANCE on a slot only PRUNE may touch) are illegal actions: the
environment makes them a no-op with a penalty. :meth:`JointLegality.conditional_mask` removes
them by masking later heads given the earlier choices (used by Esper's own PPO and
``LearnedPolicy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esper.errors import ShapeError
from esper.leyline.actions import (
    ALPHA_TARGETS,
    BLEND_STYLES,
    HEADS,
    OP_HEADS,
    TEMPO_EPOCHS,
    Action,
    LifecycleOp,
)
from esper.leyline.legality import JointLegality
from esper.leyline.observation import Observation

__all__ = ["ActionLayout", "JointLegality", "action_mask", "is_legal"]

N_OPS = len(LifecycleOp)


@dataclass(frozen=True)
class ActionLayout:
    """The slot ids and blueprints that give the slot and blueprint heads their meaning."""

    slot_ids: tuple[str, ...]
    blueprints: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.slot_ids or not self.blueprints:
            raise ValueError(
                f"an action layout needs at least one slot and one blueprint; got slots "
                f"{list(self.slot_ids)} and blueprints {list(self.blueprints)}"
            )

    @classmethod
    def from_observation(cls, obs: Observation) -> ActionLayout:
        return cls(tuple(s.slot_id for s in obs.slots), tuple(obs.blueprints))

    @property
    def head_sizes(self) -> dict[str, int]:
        """Choices per head, keyed and ordered as ``HEADS``."""
        return {
            "op": N_OPS,
            "slot": len(self.slot_ids),
            "blueprint": len(self.blueprints),
            "style": len(BLEND_STYLES),
            "tempo": len(TEMPO_EPOCHS),
            "alpha_target": len(ALPHA_TARGETS),
        }

    @property
    def nvec(self) -> np.ndarray:
        """Head sizes as the ``MultiDiscrete`` ``nvec``."""
        return np.asarray(list(self.head_sizes.values()), dtype=np.int64)

    @property
    def mask_dim(self) -> int:
        return int(self.nvec.sum())

    def decode(self, vector: Sequence[int] | np.ndarray) -> Action:
        """The :class:`Action` an action vector means (heads its op ignores are ignored).

        Raises:
            ShapeError: not one integer per head, or an entry out of its head's range.
        """
        vec = self.check_vector(vector)
        op = LifecycleOp(int(vec[0]))
        used = OP_HEADS[op]
        fields: dict[str, Any] = {}
        if "slot" in used:
            fields["slot"] = self.slot_ids[int(vec[1])]
        if "blueprint" in used:
            fields["blueprint"] = self.blueprints[int(vec[2])]
        if "style" in used:
            fields["alpha_curve"], fields["alpha_algorithm"] = BLEND_STYLES[int(vec[3])]
        if "tempo" in used:
            fields["tempo_epochs"] = TEMPO_EPOCHS[int(vec[4])]
        if "alpha_target" in used:
            fields["alpha_target"] = ALPHA_TARGETS[int(vec[5])]
        return Action(op, **fields)  # heads the op ignores keep Action's defaults

    def encode(self, action: Action) -> np.ndarray:
        """The action vector of ``action`` (index 0 for heads its op ignores).

        Raises:
            ValueError: a slot, blueprint, style, tempo or alpha target outside the layout.
        """
        vec = np.zeros(len(HEADS), dtype=np.int64)
        vec[0] = int(action.op)
        used = OP_HEADS[action.op]
        try:
            if "slot" in used:
                vec[1] = self.slot_ids.index(action.slot)
            if "blueprint" in used:
                vec[2] = self.blueprints.index(action.blueprint)
            if "style" in used:
                vec[3] = BLEND_STYLES.index((action.alpha_curve, action.alpha_algorithm))
            if "tempo" in used:
                vec[4] = TEMPO_EPOCHS.index(action.tempo_epochs)
            if "alpha_target" in used:
                vec[5] = ALPHA_TARGETS.index(action.alpha_target)
        except ValueError as exc:
            raise ValueError(f"{action} cannot be encoded in the layout {self}: {exc}") from exc
        return vec

    def check_vector(self, vector: Sequence[int] | np.ndarray) -> np.ndarray:
        """``vector`` as an int64 array, validated against the head sizes."""
        arr = np.asarray(vector)
        if arr.shape != (len(HEADS),):
            raise ShapeError(
                f"an action is {len(HEADS)} integers, one per head {list(HEADS)}; got shape "
                f"{arr.shape}. Pass e.g. env.action_space.sample()"
            )
        integral = np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))
        if not np.issubdtype(arr.dtype, np.integer) and not integral:
            raise ShapeError(f"action entries must be integers; got {arr.dtype} values {arr.tolist()}")
        arr = arr.astype(np.int64)
        bad = [
            f"{h}={v} (0..{n - 1})" for h, v, n in zip(HEADS, arr, self.nvec, strict=True) if not 0 <= v < n
        ]
        if bad:
            raise ShapeError(f"action entries out of range: {', '.join(bad)}")
        return arr


def action_mask(obs: Observation) -> np.ndarray:
    """The flat per-head mask (union over ops) for ``obs``; see the module docstring."""
    return JointLegality.from_observation(obs).flat_mask()


def is_legal(obs: Observation, vector: Sequence[int] | np.ndarray) -> bool:
    """Whether an action vector is jointly legal after ``obs`` (raises ShapeError if malformed)."""
    layout = ActionLayout.from_observation(obs)
    return JointLegality.from_observation(obs).allows(layout.check_vector(vector))

"""Legal-action masks and action-vector <-> :class:`Action` conversion for the factored heads.

Layouts:

* **Action vector**: one int per head in ``HEADS`` order (``op, slot, blueprint, style, tempo,
  alpha_target``), the ``MultiDiscrete`` action of the environment. Sizes come from
  :class:`ActionLayout` (slots and blueprints of the run).
* **Flat mask**: the per-head masks concatenated in ``HEADS`` order (sb3-contrib
  MaskablePPO's layout), True = legal.

What is legal (exact, given an :class:`Observation` taken right before the action applies):

============================  ===============================================================
 op                            legal for slot ``s`` when
============================  ===============================================================
 WAIT                          always (ignores the slot)
 GERMINATE                     ``s`` is DORMANT and some blueprint fits the parameter budget
                               (``seed_params + blueprint_params[s][b] <= max_seed_params``)
 ADVANCE                       ``s`` is GERMINATED/TRAINING/BLENDING/HOLDING and its gate passes
 SET_ALPHA_TARGET              ``s`` is BLENDING or HOLDING
 PRUNE                         ``s`` is GERMINATED/TRAINING/BLENDING/HOLDING
 FOSSILIZE                     ``s`` is HOLDING and its gate passes
============================  ===============================================================

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
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage

__all__ = ["ActionLayout", "JointLegality", "action_mask", "is_legal"]

_LIVE = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})
_BLENDED = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})
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


@dataclass(frozen=True)
class JointLegality:
    """Exact legality: ``op_slot[op, s]`` (WAIT's row is all True) and ``blueprint[s, b]``."""

    op_slot: np.ndarray  # (n_ops, n_slots) bool
    blueprint: np.ndarray  # (n_slots, n_blueprints) bool: fits the budget (and s is DORMANT)

    @classmethod
    def from_observation(cls, obs: Observation) -> JointLegality:
        n_slots, n_bp = len(obs.slots), len(obs.blueprints)
        op_slot = np.zeros((N_OPS, n_slots), dtype=bool)
        blueprint = np.zeros((n_slots, n_bp), dtype=bool)
        op_slot[LifecycleOp.WAIT] = True
        for i, s in enumerate(obs.slots):
            if s.stage == SeedStage.DORMANT:
                blueprint[i] = [_fits(obs, s.slot_id, b) for b in obs.blueprints]
                op_slot[LifecycleOp.GERMINATE, i] = blueprint[i].any()
            live = s.stage in _LIVE
            op_slot[LifecycleOp.ADVANCE, i] = live and s.gate_ready
            op_slot[LifecycleOp.SET_ALPHA_TARGET, i] = s.stage in _BLENDED
            op_slot[LifecycleOp.PRUNE, i] = live
            op_slot[LifecycleOp.FOSSILIZE, i] = s.stage == SeedStage.HOLDING and s.gate_ready
        return cls(op_slot, blueprint)

    def allows(self, vector: np.ndarray) -> bool:
        """Whether a (validated) action vector is legal jointly, not just head by head."""
        op, slot, bp = int(vector[0]), int(vector[1]), int(vector[2])
        if op == LifecycleOp.WAIT:
            return True
        if not self.op_slot[op, slot]:
            return False
        return op != LifecycleOp.GERMINATE or bool(self.blueprint[slot, bp])

    def flat_mask(self) -> np.ndarray:
        """The per-head projection (union over ops), flat in ``HEADS`` order; see the module doc."""
        ops = self.op_slot.any(axis=1)
        slot = self.op_slot[1:].any(axis=0)
        return self._assemble(ops, slot, self.blueprint.any(axis=0), ops)

    def conditional_mask(self, op: int, slot: int | None = None) -> np.ndarray:
        """Flat mask with the op head as :meth:`flat_mask` and the later heads restricted to
        what is legal given ``op`` (and, for the blueprint head, ``slot``).

        Sampling the heads in order under these masks (op; then slot; then the rest) yields
        only jointly legal actions.
        """
        ops = self.op_slot.any(axis=1)
        only = np.zeros(N_OPS, dtype=bool)
        only[op] = True
        slots = self.op_slot[op] if op != LifecycleOp.WAIT else np.zeros(self.op_slot.shape[1], bool)
        if op == LifecycleOp.GERMINATE and slot is not None:
            blueprint = self.blueprint[slot]
        else:
            blueprint = np.zeros(self.blueprint.shape[1], bool)
            if op == LifecycleOp.GERMINATE:
                blueprint = self.blueprint.any(axis=0)
        return self._assemble(ops, slots, blueprint, only)

    def _assemble(self, ops: Any, slot: Any, blueprint: Any, reading: Any) -> np.ndarray:
        """Concatenate head masks; ``reading`` = ops whose heads style/tempo/alpha may be read."""
        germ = bool(reading[LifecycleOp.GERMINATE])
        tempo = germ or bool(reading[LifecycleOp.SET_ALPHA_TARGET])
        heads = [
            ops,
            slot,
            blueprint,
            np.full(len(BLEND_STYLES), germ),
            np.full(len(TEMPO_EPOCHS), tempo),
            np.full(len(ALPHA_TARGETS), bool(reading[LifecycleOp.SET_ALPHA_TARGET])),
        ]
        heads = [np.array(h, dtype=bool) for h in heads]  # copies: never write into the tables
        for h in heads:
            if not h.any():
                h[0] = True  # a head no legal op reads: only index 0 (policy_net's convention)
        return np.concatenate(heads)


def _fits(obs: Observation, slot_id: str, blueprint: str) -> bool:
    if obs.max_seed_params is None:
        return True
    cost = obs.blueprint_params.get(slot_id, {}).get(blueprint, 0)
    return obs.seed_params + cost <= obs.max_seed_params


def action_mask(obs: Observation) -> np.ndarray:
    """The flat per-head mask (union over ops) for ``obs``; see the module docstring."""
    return JointLegality.from_observation(obs).flat_mask()


def is_legal(obs: Observation, vector: Sequence[int] | np.ndarray) -> bool:
    """Whether an action vector is jointly legal after ``obs`` (raises ShapeError if malformed)."""
    layout = ActionLayout.from_observation(obs)
    return JointLegality.from_observation(obs).allows(layout.check_vector(vector))

"""Which lifecycle actions are legal after an observation: the one table every part reads.

The engine's door for structural change refuses what this table refuses, the environment's
``action_masks()`` and the learned policy's conditional masks are projections of it, and the
baseline controllers choose among what it allows, so legality is computed in one place.

What is legal (given an :class:`~esper.leyline.observation.Observation` taken right before the
action applies):

============================  ===============================================================
 op                            legal for slot ``s`` when
============================  ===============================================================
 WAIT                          always (ignores the slot)
 GERMINATE                     ``s`` is DORMANT and the blueprint fits the parameter budget
                               (``seed_params + blueprint_params[s][b] <= max_seed_params``)
 ADVANCE                       ``s`` is GERMINATED/TRAINING/BLENDING/HOLDING and its gate passes
 SET_ALPHA_TARGET              ``s`` is BLENDING or HOLDING
 PRUNE                         ``s`` is GERMINATED/TRAINING/BLENDING/HOLDING
 FOSSILIZE                     ``s`` is HOLDING and its gate passes
============================  ===============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from esper.leyline.actions import ALPHA_TARGETS, BLEND_STYLES, TEMPO_EPOCHS, Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage

__all__ = ["JointLegality"]

_LIVE = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})
_BLENDED = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})
N_OPS = len(LifecycleOp)


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

    def refusal(self, obs: Observation, action: Action) -> str | None:
        """Why ``action`` is illegal after ``obs`` (None when it is legal), read off this table."""
        if action.op == LifecycleOp.WAIT:
            return None
        slot_ids = [s.slot_id for s in obs.slots]
        if action.slot not in slot_ids:
            return f"{action.op.name} names slot {action.slot!r}; the slots are {slot_ids}"
        i = slot_ids.index(action.slot)
        stage = obs.slots[i].stage.name
        if action.op == LifecycleOp.GERMINATE:
            if action.blueprint not in obs.blueprints:
                return f"blueprint {action.blueprint!r} is not one of {list(obs.blueprints)}"
            if stage != SeedStage.DORMANT.name:
                return f"slot {action.slot!r} is {stage}: GERMINATE needs a DORMANT slot"
            cost = obs.blueprint_params.get(action.slot, {}).get(action.blueprint, 0)
            if action.alpha_algorithm == AlphaAlgorithm.GATE:
                cost += obs.gate_params.get(action.slot, 0)
            fits = obs.max_seed_params is None or obs.seed_params + cost <= obs.max_seed_params
            if not self.blueprint[i, obs.blueprints.index(action.blueprint)] or not fits:
                if action.blueprint not in obs.blueprint_params.get(action.slot, {action.blueprint: 0}):
                    return f"slot {action.slot!r} does not take blueprint {action.blueprint!r}"
                return (
                    f"blueprint {action.blueprint!r} ({action.alpha_algorithm.name}) adds {cost} parameters "
                    f"to {obs.seed_params}, over the seed budget max_seed_params={obs.max_seed_params}"
                )
            return None
        if not self.op_slot[action.op, i]:
            return f"{action.op.name} is not legal for slot {action.slot!r} in stage {stage}" + (
                " (its gate does not pass yet)" if action.op in _GATED and obs.slots[i].stage in _LIVE else ""
            )
        return None

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


_GATED = frozenset({LifecycleOp.ADVANCE, LifecycleOp.FOSSILIZE})


def _fits(obs: Observation, slot_id: str, blueprint: str) -> bool:
    """The blueprint can go into the slot and fits the budget (an observation that lists a
    slot's blueprint costs lists exactly the blueprints that slot takes)."""
    costs = obs.blueprint_params.get(slot_id)
    if costs is not None and blueprint not in costs:
        return False
    if obs.max_seed_params is None:
        return True
    cost = (costs or {}).get(blueprint, 0)
    return obs.seed_params + cost <= obs.max_seed_params

"""Baseline controllers: ``static`` (never grows) and ``random`` (a uniformly random legal-looking action)."""

from __future__ import annotations

import random
from typing import Any

from esper.leyline.actions import ALPHA_TARGETS, BLEND_STYLES, TEMPO_EPOCHS, WAIT, Action, LifecycleOp
from esper.leyline.legality import JointLegality
from esper.leyline.observation import Observation

__all__ = ["RandomPolicy", "StaticPolicy"]


class StaticPolicy:
    """The baseline: the same host and budget, no seeds."""

    name = "static"

    def decide(self, observation: Observation) -> Action:
        return WAIT

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class RandomPolicy:
    """Picks uniformly among the legal actions of the current state (seeded).

    Legality is read off :class:`~esper.leyline.legality.JointLegality`, the table the engine's
    door enforces, so every action it picks is applied (the seed budget included).
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def decide(self, observation: Observation) -> Action:
        return self.rng.choice(self._candidates(observation))

    def _candidates(self, obs: Observation) -> list[Action]:
        legal = JointLegality.from_observation(obs)
        out: list[Action] = [WAIT]
        for i, s in enumerate(obs.slots):
            if legal.op_slot[LifecycleOp.GERMINATE, i]:
                fitting = [b for b, ok in zip(obs.blueprints, legal.blueprint[i], strict=True) if ok]
                curve, algorithm = self.rng.choice(BLEND_STYLES)
                out.append(
                    Action(
                        LifecycleOp.GERMINATE,
                        slot=s.slot_id,
                        blueprint=self.rng.choice(fitting),
                        alpha_algorithm=algorithm,
                        alpha_curve=curve,
                        tempo_epochs=self.rng.choice(TEMPO_EPOCHS),
                    )
                )
            for op in (LifecycleOp.ADVANCE, LifecycleOp.PRUNE, LifecycleOp.FOSSILIZE):
                if legal.op_slot[op, i]:
                    out.append(Action(op, slot=s.slot_id))
            if legal.op_slot[LifecycleOp.SET_ALPHA_TARGET, i]:
                out.append(
                    Action(
                        LifecycleOp.SET_ALPHA_TARGET,
                        slot=s.slot_id,
                        alpha_target=self.rng.choice(ALPHA_TARGETS),
                        tempo_epochs=self.rng.choice(TEMPO_EPOCHS),
                    )
                )
        return out

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"version": version, "internal": list(internal), "gauss": gauss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate((state["version"], tuple(state["internal"]), state["gauss"]))

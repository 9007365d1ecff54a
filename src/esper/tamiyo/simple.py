"""Baseline controllers: ``static`` (never grows) and ``random`` (a uniformly random legal-looking action)."""

from __future__ import annotations

import random
from typing import Any

from esper.leyline.actions import ALPHA_TARGETS, BLEND_STYLES, TEMPO_EPOCHS, WAIT, Action, LifecycleOp
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage

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
    """Picks uniformly among the actions that make sense for the current slots (seeded)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def decide(self, observation: Observation) -> Action:
        return self.rng.choice(self._candidates(observation))

    def _candidates(self, obs: Observation) -> list[Action]:
        out: list[Action] = [WAIT]
        for s in obs.slots:
            if s.stage == SeedStage.DORMANT:
                curve, algorithm = self.rng.choice(BLEND_STYLES)
                out.append(
                    Action(
                        LifecycleOp.GERMINATE,
                        slot=s.slot_id,
                        blueprint=self.rng.choice(obs.blueprints),
                        alpha_algorithm=algorithm,
                        alpha_curve=curve,
                        tempo_epochs=self.rng.choice(TEMPO_EPOCHS),
                    )
                )
            elif s.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING):
                out.append(Action(LifecycleOp.ADVANCE, slot=s.slot_id))
                out.append(Action(LifecycleOp.PRUNE, slot=s.slot_id))
                if s.stage == SeedStage.HOLDING:
                    out.append(Action(LifecycleOp.FOSSILIZE, slot=s.slot_id))
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

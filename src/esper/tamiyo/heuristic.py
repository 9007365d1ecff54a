"""The heuristic controller: germinate on a plateau, advance through passing gates, keep contributors.

Each epoch it takes the first of these that applies:
1. prune a seed whose contribution stayed negative for ``prune_patience`` measurements, or whose
   stage stalled (longer in a stage than its budget);
2. fossilize a HOLDING seed whose gate passes;
3. advance a seed whose next gate passes;
4. germinate when fewer than ``max_in_flight`` seeds are in flight, a slot is free, the parameter
   budget allows, and either validation accuracy has plateaued or the run is past
   ``germinate_after`` epochs (grow early: width added early trains for most of the budget,
   as a static model of the final size would), rotating blueprints and skipping pruned ones;
5. wait.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from esper.leyline.actions import WAIT, Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.legality import JointLegality
from esper.leyline.observation import Observation, SlotObservation
from esper.leyline.stages import SeedStage

__all__ = ["DEFAULT_ROTATION", "HeuristicConfig", "HeuristicPolicy"]

DEFAULT_ROTATION: dict[str, tuple[str, ...]] = {
    "cnn": (
        "widen",
        "widen_half",
        "conv_heavy",
        "conv_light",
        "bottleneck",
        "depthwise",
        "attention",
        "conv_small",
        "norm",
    ),
    "transformer": ("widen_mlp", "mlp", "attention", "lora_large", "mlp_small", "lora", "norm"),
}
"""Blueprint order per topology: width first (small hosts are bound by width, and residual seeds
at the slot's width add depth only), then the most capable residual seeds."""

_IN_FLIGHT = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)


@dataclass(frozen=True)
class HeuristicConfig:
    """Knobs of the heuristic.

    Attributes:
        plateau_window: epochs without improvement (beyond ``plateau_min_delta``) that make a
            plateau.
        plateau_min_delta: accuracy gain that counts as improvement.
        prune_patience: consecutive negative contributions that prune a seed.
        stall_epochs: extra epochs a seed may spend in a stage beyond its expected length.
        max_in_flight: seeds between germination and fossilization at once.
        blend_tempo_epochs: alpha ramp length for new seeds.
        min_training_epochs: the G2 gate's TRAINING length (the stall budget starts after it).
        blueprints: blueprint rotation (default: ``DEFAULT_ROTATION`` for the topology).
        blueprint_penalty: rotation slots a blueprint loses each time one of its seeds is pruned.
        germinate_after: from this epoch on, germinate without waiting for a plateau (None:
            only on a plateau).
    """

    plateau_window: int = 3
    plateau_min_delta: float = 0.005
    prune_patience: int = 2
    stall_epochs: int = 4
    max_in_flight: int = 2
    blend_tempo_epochs: int = 5
    min_training_epochs: int = 3
    blueprints: tuple[str, ...] | None = None
    blueprint_penalty: int = 2
    germinate_after: int | None = 0

    def __post_init__(self) -> None:
        for name in ("plateau_window", "prune_patience", "max_in_flight", "blend_tempo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeuristicConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.stall_epochs < 0 or self.plateau_min_delta < 0 or self.blueprint_penalty < 0:
            raise ValueError(
                "HeuristicConfig.stall_epochs, plateau_min_delta and blueprint_penalty must be >= 0"
            )
        if self.germinate_after is not None and self.germinate_after < 0:
            raise ValueError(
                f"HeuristicConfig.germinate_after must be >= 0 or None, got {self.germinate_after!r}"
            )


class HeuristicPolicy:
    """Rule-based controller (see the module docstring for the rules, in priority order)."""

    name = "heuristic"

    def __init__(self, config: HeuristicConfig | None = None) -> None:
        self.config = config or HeuristicConfig()
        self.penalties: dict[str, int] = {}
        self.germinated = 0
        self.germinated_in: dict[str, int] = {}
        """Germinations per slot: each slot walks the rotation from its start (width first)."""

    def decide(self, observation: Observation) -> Action:
        obs, cfg = observation, self.config
        for slot in obs.slots:
            if slot.stage in _IN_FLIGHT and self._should_prune(slot, obs):
                self._penalise(slot.blueprint)
                return Action(LifecycleOp.PRUNE, slot=slot.slot_id)
        for slot in obs.slots:
            if slot.stage == SeedStage.HOLDING and slot.gate_ready:
                return Action(LifecycleOp.FOSSILIZE, slot=slot.slot_id)
        for slot in obs.slots:
            if (
                slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING)
                and slot.gate_ready
            ):
                return Action(LifecycleOp.ADVANCE, slot=slot.slot_id)
        in_flight = sum(s.stage in _IN_FLIGHT for s in obs.slots)
        if in_flight < cfg.max_in_flight and self._time_to_grow(obs):
            return self._germinate(obs)
        return WAIT

    def _time_to_grow(self, obs: Observation) -> bool:
        """Past ``germinate_after`` epochs, or on a plateau."""
        after = self.config.germinate_after
        if after is not None and obs.epoch >= after:
            return True
        return obs.plateau_epochs(self.config.plateau_min_delta) >= self.config.plateau_window

    def _should_prune(self, slot: SlotObservation, obs: Observation) -> bool:
        recent = slot.contribution_history[-self.config.prune_patience :]
        blended = slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING)
        if blended and len(recent) == self.config.prune_patience and all(c < 0 for c in recent):
            return True
        return slot.epochs_in_stage > self._stage_budget(slot)

    def _stage_budget(self, slot: SlotObservation) -> int:
        extra = self.config.stall_epochs
        if slot.stage == SeedStage.BLENDING:
            return self.config.blend_tempo_epochs + extra
        if slot.stage == SeedStage.TRAINING:
            return self.config.min_training_epochs + extra
        return 1 + extra

    def _germinate(self, obs: Observation) -> Action:
        free = [s for s in obs.slots if s.stage == SeedStage.DORMANT]
        if not free:
            return WAIT
        slot = free[self.germinated % len(free)]
        blueprint = self._pick_blueprint(obs, slot.slot_id)
        if blueprint is None:
            return WAIT
        self.germinated += 1
        self.germinated_in[slot.slot_id] = self.germinated_in.get(slot.slot_id, 0) + 1
        return Action(
            LifecycleOp.GERMINATE,
            slot=slot.slot_id,
            blueprint=blueprint,
            alpha_algorithm=AlphaAlgorithm.ADD,
            alpha_curve=AlphaCurve.LINEAR,
            tempo_epochs=self.config.blend_tempo_epochs,
        )

    def _pick_blueprint(self, obs: Observation, slot_id: str) -> str | None:
        """The slot's next blueprint in the rotation, pushed back by prune penalties, within budget.

        Each slot starts at the head of the rotation, so every slot is offered width first; the
        half-width blueprint is the fallback when the full one does not fit or was pruned.
        """
        rotation = self.config.blueprints or DEFAULT_ROTATION[obs.topology]
        legal = JointLegality.from_observation(obs)  # the door's table: budget and all
        row = legal.blueprint[[s.slot_id for s in obs.slots].index(slot_id)]
        fits = {b for b, ok in zip(obs.blueprints, row, strict=True) if ok}
        allowed = [b for b in rotation if b in fits]
        if not allowed:
            return None
        start = self.germinated_in.get(slot_id, 0) % len(allowed)
        order = allowed[start:] + allowed[:start]
        return min(
            order, key=lambda b: (self.penalties.get(b, 0) * self.config.blueprint_penalty, order.index(b))
        )

    def _penalise(self, blueprint: str | None) -> None:
        if blueprint is not None:
            self.penalties[blueprint] = self.penalties.get(blueprint, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "penalties": dict(self.penalties),
            "germinated": self.germinated,
            "germinated_in": dict(self.germinated_in),
            "config": _config_dict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.penalties = {str(k): int(v) for k, v in state["penalties"].items()}
        self.germinated = int(state["germinated"])
        # A checkpoint from before per-slot rotation has no counts: the slots start afresh.
        self.germinated_in = {str(k): int(v) for k, v in state.get("germinated_in", {}).items()}


def _config_dict(config: HeuristicConfig) -> dict[str, Any]:
    data = asdict(config)
    data["blueprints"] = list(config.blueprints) if config.blueprints else None
    return data

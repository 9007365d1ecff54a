"""Apply controller actions to a model and turn slot changes into typed events."""

from __future__ import annotations

from dataclasses import dataclass

from esper.errors import EsperError
from esper.kasmina.blending import GatedBlend
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.model import MorphogeneticModel
from esper.kasmina.slot import SeedSlot
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.events import (
    AlphaChanged,
    Event,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)
from esper.leyline.observation import Observation, SlotObservation
from esper.leyline.stages import SeedStage

__all__ = ["ActionOutcome", "SlotView", "apply_action", "diff_events", "observe", "snapshot_slots"]


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """Whether an action took effect; ``reason`` says why not (illegal actions are no-ops)."""

    applied: bool
    reason: str = ""


def apply_action(model: MorphogeneticModel, action: Action) -> ActionOutcome:
    """Apply ``action``; an action the model refuses changes nothing and is reported, not raised."""
    op = action.op
    if op == LifecycleOp.WAIT:
        return ActionOutcome(True)
    try:
        if action.slot is None:
            raise ValueError(f"{op.name} needs a slot")
        slot = model.slot(action.slot)
        return _apply_to_slot(model, slot, action)
    except (EsperError, ValueError, RuntimeError) as exc:
        return ActionOutcome(False, str(exc))


def _apply_to_slot(model: MorphogeneticModel, slot: SeedSlot, action: Action) -> ActionOutcome:
    op = action.op
    if op == LifecycleOp.GERMINATE:
        if action.blueprint is None:
            raise ValueError("GERMINATE needs a blueprint")
        spec = BlueprintRegistry.get(model.topology, action.blueprint)
        # A width seed's term can only be added (so it merges on fossilize): the style head's
        # algorithm is not read for it, as the slot head is not read for WAIT.
        algorithm = AlphaAlgorithm.ADD if spec.is_width else action.alpha_algorithm
        model.germinate_seed(
            action.blueprint,
            slot=slot.slot_id,
            alpha_algorithm=algorithm,
            alpha_curve=action.alpha_curve,
            blend_tempo_epochs=action.tempo_epochs,
        )
        return ActionOutcome(True)
    if op == LifecycleOp.ADVANCE:
        result = slot.advance_stage()
        return ActionOutcome(result.passed, "; ".join(result.checks_failed))
    if op == LifecycleOp.FOSSILIZE:
        if slot.stage != SeedStage.HOLDING:
            return ActionOutcome(False, f"slot {slot.slot_id!r} is {slot.stage.name}, not HOLDING")
        result = slot.advance_stage(SeedStage.FOSSILIZED)
        return ActionOutcome(result.passed, "; ".join(result.checks_failed))
    if op == LifecycleOp.SET_ALPHA_TARGET:
        slot.set_alpha_target(action.alpha_target, steps=action.tempo_epochs)
        return ActionOutcome(True)
    if op == LifecycleOp.PRUNE:
        removed = slot.prune("controller")
        return ActionOutcome(removed, "" if removed else f"slot {slot.slot_id!r} holds no seed")
    raise ValueError(f"unknown operation {op!r}")


@dataclass(frozen=True, slots=True)
class SlotView:
    """The parts of a slot that events report on."""

    stage: SeedStage
    seed_id: str | None
    blueprint: str | None
    alpha: float
    params: int
    contribution: float | None
    prune_reason: str


def snapshot_slots(model: MorphogeneticModel) -> dict[str, SlotView]:
    return {
        s.slot_id: SlotView(
            s.stage,
            s.state.seed_id,
            s.state.blueprint_id,
            s.alpha,
            s.seed_params,
            s.state.metrics.counterfactual_contribution,
            s.state.metrics.prune_reason,
        )
        for s in model.slots()
    }


def diff_events(model: MorphogeneticModel, before: dict[str, SlotView], epoch: int) -> list[Event]:
    """Events for everything that changed in the slots since ``before``."""
    events: list[Event] = []
    for sid, new in snapshot_slots(model).items():
        old = before[sid]
        slot = model.slot(sid)
        seed_id = new.seed_id or old.seed_id or ""
        if new.stage == SeedStage.GERMINATED and old.stage != SeedStage.GERMINATED:
            ctl = slot.state.alpha_controller
            events.append(
                SeedGerminated(
                    epoch=epoch,
                    slot=sid,
                    blueprint=new.blueprint or "",
                    seed_id=seed_id,
                    params=new.params,
                    alpha_algorithm=slot.alpha_algorithm,
                    alpha_curve=ctl.alpha_curve,
                    tempo=slot.state.blend_tempo_epochs,
                )
            )
        if old.stage != new.stage:
            events.append(
                StageChanged(epoch=epoch, slot=sid, seed_id=seed_id, from_stage=old.stage, to_stage=new.stage)
            )
            if new.stage == SeedStage.PRUNED:
                events.append(SeedPruned(epoch=epoch, slot=sid, seed_id=seed_id, reason=new.prune_reason))
            if new.stage == SeedStage.FOSSILIZED:
                events.append(
                    SeedFossilized(epoch=epoch, slot=sid, seed_id=seed_id, contribution=new.contribution)
                )
        if new.alpha != old.alpha and new.seed_id is not None and new.stage != SeedStage.PRUNED:
            events.append(AlphaChanged(epoch=epoch, slot=sid, seed_id=seed_id, alpha=new.alpha))
    return events


def observe(
    model: MorphogeneticModel,
    *,
    epoch: int,
    max_epochs: int,
    history: list[dict[str, float]],
    max_seed_params: int | None,
    blueprints: tuple[str, ...],
) -> Observation:
    """Build the controller's view of the run after ``epoch``."""
    last = history[-1]
    slots = tuple(_slot_observation(s) for s in model.slots())
    per_slot = {
        s.slot_id: {b: s.param_estimate(b) for b in blueprints if b in s.blueprint_names()}
        for s in model.slots()
    }  # a slot lists only what it takes (a 2-D slot: no sequence blueprint; no width where it can't)
    return Observation(
        epoch=epoch,
        max_epochs=max_epochs,
        topology=model.topology,
        train_loss=last["train_loss"],
        train_accuracy=last["train_accuracy"],
        val_loss=last["val_loss"],
        val_accuracy=last["val_accuracy"],
        val_accuracy_history=tuple(h["val_accuracy"] for h in history),
        train_loss_history=tuple(h["train_loss"] for h in history),
        host_params=sum(p.numel() for p in model.get_host_parameters()),
        seed_params=model.active_seed_params,
        max_seed_params=max_seed_params,
        slots=slots,
        blueprints=blueprints,
        blueprint_params=per_slot,
        gate_params={s.slot_id: GatedBlend.param_count(s.channels) for s in model.slots()},
    )


def _slot_observation(slot: SeedSlot) -> SlotObservation:
    st = slot.state
    ready = (
        slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)
        and slot.check_advance().passed
    )
    return SlotObservation(
        slot_id=slot.slot_id,
        channels=slot.channels,
        stage=slot.stage,
        blueprint=st.blueprint_id,
        alpha=slot.alpha,
        alpha_target=st.alpha_controller.alpha_target,
        alpha_algorithm=st.alpha_algorithm,
        epochs_in_stage=st.epochs_in_stage,
        contribution=st.metrics.counterfactual_contribution,
        contribution_history=tuple(st.metrics.history),
        seed_params=slot.seed_params,
        gate_ready=ready,
        embargo_remaining=st.embargo_remaining,
    )

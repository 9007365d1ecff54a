"""apply_action: every operation, legal and illegal (refused -> nothing changed); diff_events."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from tolaria_kit import backward_once, grow

from esper import CNNHost, MorphogeneticModel, QualityGates
from esper.leyline.actions import WAIT, Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.events import AlphaChanged, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper.leyline.stages import SeedStage
from esper.tolaria.lifecycle import ActionOutcome, apply_action, diff_events, observe, snapshot_slots

X = torch.randn(4, 1, 8, 8)


def _model(**gates: Any) -> MorphogeneticModel:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    defaults = {"min_training_epochs": 0, "min_holding_epochs": 0, "embargo_epochs": 1}
    return MorphogeneticModel(host, gates=QualityGates(**{**defaults, **gates}))


def _fingerprint(model: MorphogeneticModel) -> dict[str, Any]:
    """Everything a refused action must leave alone: weights, slot states, parameter identities."""
    state = {
        k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in model.state_dict().items()
    }
    return {"state": state, "params": [id(p) for p in model.parameters()]}


def _assert_unchanged(model: MorphogeneticModel, before: dict[str, Any]) -> None:
    after = _fingerprint(model)
    assert after["params"] == before["params"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after["state"][key], value), key
        else:
            assert after["state"][key] == value, key


def _germinate(slot: str = "r0c1", blueprint: str = "conv_light") -> Action:
    return Action(
        LifecycleOp.GERMINATE,
        slot=slot,
        blueprint=blueprint,
        alpha_algorithm=AlphaAlgorithm.MULTIPLY,
        alpha_curve=AlphaCurve.COSINE,
        tempo_epochs=3,
    )


# ----------------------------------------------------------------------------- legal actions
def test_wait_changes_nothing() -> None:
    model = _model()
    before = _fingerprint(model)
    assert apply_action(model, WAIT) == ActionOutcome(True)
    _assert_unchanged(model, before)


def test_germinate_builds_the_seed_as_asked() -> None:
    model = _model()
    assert apply_action(model, _germinate()) == ActionOutcome(True)
    slot = model.slot("r0c1")
    assert slot.stage == SeedStage.GERMINATED
    assert slot.state.blueprint_id == "conv_light"
    assert slot.alpha_algorithm == AlphaAlgorithm.MULTIPLY
    assert slot.state.alpha_controller.alpha_curve == AlphaCurve.COSINE
    assert slot.state.blend_tempo_epochs == 3
    assert model.slot("r0c0").stage == SeedStage.DORMANT


def test_advance_moves_one_stage_when_the_gate_passes() -> None:
    model = _model()
    apply_action(model, _germinate())
    assert apply_action(model, Action(LifecycleOp.ADVANCE, slot="r0c1")).applied
    assert model.slot("r0c1").stage == SeedStage.TRAINING


def test_fossilize_a_ready_holding_seed() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.HOLDING, X)
    model.slot("r0c0").record_contribution(0.02)
    assert apply_action(model, Action(LifecycleOp.FOSSILIZE, slot="r0c0")) == ActionOutcome(True)
    assert model.slot("r0c0").stage == SeedStage.FOSSILIZED


def test_set_alpha_target_from_holding_starts_a_new_ramp() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.HOLDING, X)
    action = Action(LifecycleOp.SET_ALPHA_TARGET, slot="r0c0", alpha_target=0.5, tempo_epochs=2)
    assert apply_action(model, action).applied
    slot = model.slot("r0c0")
    assert slot.stage == SeedStage.BLENDING
    assert slot.state.alpha_controller.alpha_target == 0.5


def test_prune_removes_the_seed() -> None:
    model = _model()
    grow(model, "r0c1", "conv_light", SeedStage.TRAINING, X)
    assert apply_action(model, Action(LifecycleOp.PRUNE, slot="r0c1")) == ActionOutcome(True)
    slot = model.slot("r0c1")
    assert slot.stage == SeedStage.PRUNED and slot.seed is None
    assert slot.state.metrics.prune_reason == "controller"


# ----------------------------------------------------------------------------- refused actions
def _setup_occupied() -> MorphogeneticModel:
    model = _model(min_training_epochs=3)
    grow(model, "r0c0", "conv_light", SeedStage.TRAINING, X)
    return model


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (Action(LifecycleOp.GERMINATE, slot="r0c0", blueprint="conv_light"), "not DORMANT"),
        (Action(LifecycleOp.GERMINATE, slot="r0c1", blueprint="warp_drive"), "warp_drive"),
        (Action(LifecycleOp.GERMINATE, slot="r0c1"), "needs a blueprint"),
        (Action(LifecycleOp.GERMINATE, slot="r9c9", blueprint="conv_light"), "unknown slot 'r9c9'"),
        (Action(LifecycleOp.GERMINATE, blueprint="conv_light"), "needs a slot"),
        (Action(LifecycleOp.GERMINATE, slot="r0c1", blueprint="conv_light", tempo_epochs=0), "blend_tempo"),
        (Action(LifecycleOp.ADVANCE, slot="r0c0"), "needs 3"),  # G2: too few TRAINING epochs
        (Action(LifecycleOp.ADVANCE, slot="r0c1"), "no next stage"),  # an empty slot
        (Action(LifecycleOp.FOSSILIZE, slot="r0c0"), "not HOLDING"),
        (Action(LifecycleOp.SET_ALPHA_TARGET, slot="r0c0", alpha_target=0.5), "needs BLENDING or HOLDING"),
        (Action(LifecycleOp.PRUNE, slot="r0c1"), "holds no seed"),
        (Action(LifecycleOp.PRUNE), "needs a slot"),
    ],
)
def test_refused_actions_change_nothing_and_say_why(action: Action, reason: str) -> None:
    model = _setup_occupied()
    before = _fingerprint(model)
    outcome = apply_action(model, action)
    assert not outcome.applied
    assert reason in outcome.reason
    _assert_unchanged(model, before)


def test_fossilize_without_a_measured_contribution_is_refused() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.HOLDING, X)
    before = _fingerprint(model)
    outcome = apply_action(model, Action(LifecycleOp.FOSSILIZE, slot="r0c0"))
    assert outcome == ActionOutcome(False, "counterfactual contribution has not been measured")
    _assert_unchanged(model, before)


def test_pruning_a_fossilized_seed_is_refused() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.FOSSILIZED, X)
    before = _fingerprint(model)
    outcome = apply_action(model, Action(LifecycleOp.PRUNE, slot="r0c0"))
    assert not outcome.applied and "FOSSILIZED" in outcome.reason
    _assert_unchanged(model, before)


# ----------------------------------------------------------------------------- events
def test_germinate_emits_seed_germinated_and_stage_changed() -> None:
    model = _model()
    before = snapshot_slots(model)
    apply_action(model, _germinate())
    events = diff_events(model, before, epoch=4)
    germinated, changed = events
    assert isinstance(germinated, SeedGerminated)
    assert (germinated.epoch, germinated.slot, germinated.blueprint) == (4, "r0c1", "conv_light")
    assert germinated.params == model.slot("r0c1").seed_params > 0
    assert germinated.alpha_algorithm == AlphaAlgorithm.MULTIPLY and germinated.tempo == 3
    assert changed == StageChanged(
        epoch=4,
        slot="r0c1",
        seed_id=germinated.seed_id,
        from_stage=SeedStage.DORMANT,
        to_stage=SeedStage.GERMINATED,
    )


def test_no_change_no_events() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.TRAINING, X)
    assert diff_events(model, snapshot_slots(model), epoch=0) == []


def test_blending_ticks_emit_alpha_changed() -> None:
    model = _model()
    model.germinate_seed("conv_light", slot="r0c0", blend_tempo_epochs=4)
    slot = model.slot("r0c0")
    slot.advance_stage()
    backward_once(model, X)
    slot.advance_stage()
    before = snapshot_slots(model)
    slot.step_epoch()
    (event,) = diff_events(model, before, epoch=2)
    assert isinstance(event, AlphaChanged)
    assert event.alpha == pytest.approx(0.25) and event.slot == "r0c0"


def test_prune_emits_stage_changed_and_seed_pruned_with_the_reason() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.BLENDING, X)
    seed_id = model.slot("r0c0").state.seed_id
    before = snapshot_slots(model)
    model.prune_seed(slot="r0c0", reason="hurts accuracy")
    changed, pruned = diff_events(model, before, epoch=7)
    assert changed == StageChanged(
        epoch=7, slot="r0c0", seed_id=seed_id, from_stage=SeedStage.BLENDING, to_stage=SeedStage.PRUNED
    )
    assert pruned == SeedPruned(epoch=7, slot="r0c0", seed_id=seed_id, reason="hurts accuracy")


def test_fossilize_emits_seed_fossilized_with_the_contribution() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.HOLDING, X)
    slot = model.slot("r0c0")
    slot.record_contribution(0.03)
    before = snapshot_slots(model)
    slot.advance_stage(SeedStage.FOSSILIZED)
    changed, fossilized = diff_events(model, before, epoch=9)
    assert isinstance(changed, StageChanged) and changed.to_stage == SeedStage.FOSSILIZED
    assert fossilized == SeedFossilized(epoch=9, slot="r0c0", seed_id=slot.state.seed_id, contribution=0.03)


def test_resetting_to_dormant_to_germinated_within_one_epoch() -> None:
    """The engine diffs after step_epoch() and again after the controller's action."""
    model = _model(embargo_epochs=1)
    grow(model, "r0c1", "conv_light", SeedStage.TRAINING, X)
    old_id = model.slot("r0c1").state.seed_id
    model.prune_seed(slot="r0c1")
    slot = model.slot("r0c1")
    slot.step_epoch()  # PRUNED -> EMBARGOED
    slot.step_epoch()  # EMBARGOED -> RESETTING (embargo of 1 epoch)
    assert slot.stage == SeedStage.RESETTING

    before = snapshot_slots(model)
    slot.step_epoch()  # RESETTING -> DORMANT
    first = diff_events(model, before, epoch=5)
    middle = snapshot_slots(model)
    assert apply_action(model, _germinate()).applied
    second = diff_events(model, middle, epoch=5)

    assert first == [
        StageChanged(
            epoch=5, slot="r0c1", seed_id=old_id, from_stage=SeedStage.RESETTING, to_stage=SeedStage.DORMANT
        )
    ]
    germinated, changed = second
    assert isinstance(germinated, SeedGerminated) and germinated.seed_id != old_id
    assert changed == StageChanged(
        epoch=5,
        slot="r0c1",
        seed_id=germinated.seed_id,
        from_stage=SeedStage.DORMANT,
        to_stage=SeedStage.GERMINATED,
    )


def test_observe_reports_slots_budget_and_history() -> None:
    model = _model()
    grow(model, "r0c0", "conv_light", SeedStage.TRAINING, X)
    backward_once(model, X)  # G2 needs a finite gradient since TRAINING began
    history = [
        {"train_loss": 2.0, "train_accuracy": 0.1, "val_loss": 2.1, "val_accuracy": 0.2},
        {"train_loss": 1.5, "train_accuracy": 0.3, "val_loss": 1.6, "val_accuracy": 0.4},
    ]
    obs = observe(model, epoch=1, max_epochs=10, history=history, max_seed_params=500, blueprints=("norm",))
    assert obs.val_accuracy == 0.4 and obs.val_accuracy_history == (0.2, 0.4)
    assert obs.seed_params == model.active_seed_params and obs.max_seed_params == 500
    assert obs.slot("r0c0").stage == SeedStage.TRAINING and obs.slot("r0c0").gate_ready
    assert obs.slot("r0c1").stage == SeedStage.DORMANT and not obs.slot("r0c1").gate_ready
    assert set(obs.blueprint_params) == {"r0c0", "r0c1"} and obs.blueprint_params["r0c1"]["norm"] > 0

"""Quality gates G1..G5, the embargo cycle and prune, per DESIGN."""

from __future__ import annotations

import pytest
import torch

from esper.errors import IllegalTransitionError
from esper.kasmina.gates import GateResult, QualityGates, SeedMetrics
from esper.kasmina.slot import SeedSlot
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

from .helpers import assert_unchanged, backward_through, drive, features, snapshot


def _slot(**gates) -> SeedSlot:
    return SeedSlot("r0c2", 8, "cnn", gates=QualityGates(**gates))


def _failed(slot: SeedSlot, gate: str, target: SeedStage) -> GateResult:
    """Advance, expecting the gate to fail and change nothing; returns the result."""
    before = snapshot(slot)
    result = slot.advance_stage()
    assert isinstance(result, GateResult)
    assert not result.passed
    assert result.gate == gate and result.target_stage == target
    assert result.checks_failed and all(isinstance(c, str) and c for c in result.checks_failed)
    assert_unchanged(slot, before)
    return result


def test_quality_gate_defaults():
    g = QualityGates()
    assert (g.min_training_epochs, g.min_holding_epochs, g.min_fossilize_contribution) == (3, 1, 0.0)
    assert (g.embargo_epochs, g.permissive) == (5, False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_training_epochs": -1},
        {"min_training_epochs": 1.5},
        {"min_training_epochs": True},
        {"min_holding_epochs": -2},
        {"min_holding_epochs": "3"},
        {"embargo_epochs": -1},
        {"embargo_epochs": None},
        {"min_fossilize_contribution": float("nan")},
        {"min_fossilize_contribution": "0.1"},
        {"permissive": "yes"},
        {"permissive": 1},
    ],
)
def test_bad_quality_gate_values_are_value_errors(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        QualityGates(**kwargs)


def test_g1_training_needs_a_germinated_seed():
    slot = _slot()
    slot.germinate("conv_small")
    result = slot.advance_stage()
    assert result == GateResult(True, "G1", SeedStage.TRAINING)
    assert slot.stage == SeedStage.TRAINING and slot.active


def test_g2_needs_min_training_epochs_and_a_finite_backward():
    slot = _slot(min_training_epochs=2)
    drive(slot, SeedStage.TRAINING)
    result = _failed(slot, "G2", SeedStage.BLENDING)
    assert len(result.checks_failed) == 2  # every failed check is listed, not just the first
    assert any("epochs" in c for c in result.checks_failed)
    assert any("backward" in c for c in result.checks_failed)

    slot.step_epoch()
    slot.step_epoch()
    result = _failed(slot, "G2", SeedStage.BLENDING)
    assert result.checks_failed == (result.checks_failed[0],) and "backward" in result.checks_failed[0]

    backward_through(slot)
    assert slot.advance_stage() == GateResult(True, "G2", SeedStage.BLENDING)
    assert slot.stage == SeedStage.BLENDING
    assert slot.state.metrics.grad_steps >= 1 and slot.state.metrics.grad_steps_finite >= 1


def test_failed_g2_after_a_backward_changes_nothing():
    # Gradient statistics gathered since the last step_epoch() are pending, not yet state: a
    # failed gate must not fold them into the metrics (nor anywhere else).
    slot = _slot(min_training_epochs=2)
    drive(slot, SeedStage.TRAINING)
    backward_through(slot)
    _failed(slot, "G2", SeedStage.BLENDING)
    slot.step_epoch()
    assert slot.state.metrics.grad_steps == 1 and slot.state.metrics.grad_steps_finite == 1
    backward_through(slot)
    _failed(slot, "G2", SeedStage.BLENDING)
    slot.step_epoch()
    assert slot.state.metrics.grad_steps == 2 and slot.state.metrics.grad_steps_finite == 2
    assert slot.advance_stage().passed


def test_g2_epoch_count_alone_fails():
    slot = _slot(min_training_epochs=3)
    drive(slot, SeedStage.TRAINING)
    backward_through(slot)
    slot.step_epoch()
    slot.step_epoch()
    result = _failed(slot, "G2", SeedStage.BLENDING)
    assert result.checks_failed == ("trained 2 epochs in TRAINING, needs 3",)
    slot.step_epoch()
    assert slot.advance_stage().passed


def test_g2_says_1_epoch_not_1_epochs():
    slot = _slot(min_training_epochs=2)
    drive(slot, SeedStage.TRAINING)
    backward_through(slot)
    slot.step_epoch()
    assert _failed(slot, "G2", SeedStage.BLENDING).checks_failed == ("trained 1 epoch in TRAINING, needs 2",)


def test_g2_rejects_non_finite_gradients():
    slot = _slot(min_training_epochs=0)
    drive(slot, SeedStage.TRAINING)
    x = features(slot)
    x[0, 0, 0, 0] = float("nan")
    backward_through(slot, x)
    assert slot.seed.body.weight.grad.isnan().any()
    slot.step_epoch()
    result = _failed(slot, "G2", SeedStage.BLENDING)
    assert "finite" in " ".join(result.checks_failed)
    assert slot.state.metrics.grad_steps == 1 and slot.state.metrics.grad_steps_finite == 0
    slot.zero_grad(set_to_none=True)
    backward_through(slot)
    assert slot.advance_stage().passed


def test_g2_is_vacuous_for_a_seed_without_parameters():
    slot = _slot(min_training_epochs=1)
    drive(slot, SeedStage.TRAINING, "noop")
    _failed(slot, "G2", SeedStage.BLENDING)  # the epoch count still applies
    slot.step_epoch()
    assert slot.advance_stage().passed  # no backward needed: noop has no parameters


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_g2_counts_the_seed_not_the_gate_network(algorithm):
    # The GATE network only joins when blending starts, so TRAINING cannot give it gradients.
    slot = _slot(min_training_epochs=1)
    drive(slot, SeedStage.TRAINING, "conv_small", algorithm)
    backward_through(slot)
    slot.step_epoch()
    assert slot.advance_stage().passed
    noop = _slot(min_training_epochs=0)
    drive(noop, SeedStage.TRAINING, "noop", algorithm)
    assert noop.advance_stage().passed


def test_permissive_keeps_only_the_safety_checks():
    slot = _slot(
        min_training_epochs=10, min_holding_epochs=10, min_fossilize_contribution=5.0, permissive=True
    )
    drive(slot, SeedStage.TRAINING)
    result = _failed(slot, "G2", SeedStage.BLENDING)  # finite gradients are a safety check
    assert len(result.checks_failed) == 1 and "backward" in result.checks_failed[0]
    backward_through(slot)
    assert slot.advance_stage().passed  # no waiting period
    _failed(slot, "G3", SeedStage.HOLDING)  # alpha at target is a safety check
    slot.set_alpha(1.0)
    assert slot.advance_stage().passed
    assert slot.state.metrics.counterfactual_contribution is None
    with pytest.raises(ValueError, match="finite"):  # a NaN contribution is never recorded
        slot.record_contribution(float("nan"))
    assert slot.state.metrics.counterfactual_contribution is None  # nothing changed
    slot.record_contribution(-1.0)
    assert slot.advance_stage() == GateResult(True, "G5", SeedStage.FOSSILIZED)


def test_g3_holding_needs_alpha_at_target():
    slot = _slot(min_training_epochs=0)
    drive(slot, SeedStage.BLENDING, tempo=3)
    for _ in range(2):
        result = _failed(slot, "G3", SeedStage.HOLDING)
        assert "alpha" in result.checks_failed[0]
        slot.step_epoch()
    _failed(slot, "G3", SeedStage.HOLDING)
    slot.step_epoch()
    assert slot.alpha == 1.0
    assert slot.advance_stage() == GateResult(True, "G3", SeedStage.HOLDING)


def test_g4_holding_back_to_blending():
    slot = _slot(min_training_epochs=0)
    drive(slot, SeedStage.HOLDING)
    result = slot.advance_stage(SeedStage.BLENDING)
    assert result == GateResult(True, "G4", SeedStage.BLENDING)
    assert slot.stage == SeedStage.BLENDING and slot.alpha == 1.0


def test_g5_fossilize_needs_holding_epochs_and_a_contribution_above_threshold():
    slot = _slot(min_training_epochs=0, min_holding_epochs=2, min_fossilize_contribution=0.5)
    drive(slot, SeedStage.HOLDING)
    result = _failed(slot, "G5", SeedStage.FOSSILIZED)
    assert len(result.checks_failed) == 2
    assert any("measured" in c for c in result.checks_failed)
    slot.step_epoch()
    slot.step_epoch()
    slot.record_contribution(0.5)  # equal is not above
    result = _failed(slot, "G5", SeedStage.FOSSILIZED)
    assert len(result.checks_failed) == 1 and "0.5" in result.checks_failed[0]
    slot.record_contribution(0.75)
    assert slot.state.metrics.history == [0.5, 0.75]
    assert slot.advance_stage() == GateResult(True, "G5", SeedStage.FOSSILIZED)
    assert slot.stage == SeedStage.FOSSILIZED and slot.active


def test_g5_holding_epochs_alone_fail():
    slot = _slot(min_training_epochs=0, min_holding_epochs=2)
    drive(slot, SeedStage.HOLDING)
    slot.record_contribution(1.0)
    slot.step_epoch()
    result = _failed(slot, "G5", SeedStage.FOSSILIZED)
    assert result.checks_failed == ("held 1 epoch in HOLDING, needs 2",)
    slot.step_epoch()
    assert slot.advance_stage().passed


@pytest.mark.parametrize("embargo", [1, 2, 5])
def test_embargo_cycle_timing(embargo):
    slot = _slot(embargo_epochs=embargo)
    drive(slot, SeedStage.TRAINING)
    assert slot.prune("test") is True
    assert slot.stage == SeedStage.PRUNED and slot.seed is None and slot.alpha == 0.0
    assert slot.state.metrics.prune_reason == "test" and slot.state.blueprint_id is None
    slot.step_epoch()
    assert slot.stage == SeedStage.EMBARGOED
    for _ in range(embargo - 1):
        slot.step_epoch()
        assert slot.stage == SeedStage.EMBARGOED
        with pytest.raises(IllegalTransitionError, match="EMBARGOED"):
            slot.germinate("norm")
    slot.step_epoch()
    assert slot.stage == SeedStage.RESETTING
    slot.step_epoch()
    assert slot.stage == SeedStage.DORMANT
    assert slot.state.seed_id is None and slot.state.metrics == SeedMetrics()
    slot.germinate("norm")
    assert slot.stage == SeedStage.GERMINATED


def test_default_embargo_is_five_epochs():
    slot = SeedSlot("r0c0", 8)
    drive(slot, SeedStage.GERMINATED)
    slot.prune()
    stages = []
    for _ in range(7):
        slot.step_epoch()
        stages.append(slot.stage)
    assert stages == [SeedStage.EMBARGOED] * 5 + [SeedStage.RESETTING, SeedStage.DORMANT]


@pytest.mark.parametrize(
    "stage", [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING]
)
def test_prune_removes_a_seed(stage):
    slot = _slot(min_training_epochs=0)
    drive(slot, stage)
    params = list(slot.seed_parameters())
    assert params
    assert slot.prune() is True
    assert slot.seed is None and slot.gate is None and list(slot.seed_parameters()) == []
    assert slot.alpha == 0.0 and slot.alpha_tensor.item() == 0.0
    assert slot.stage == SeedStage.PRUNED and not slot.active


def test_prune_via_advance_stage():
    slot = _slot()
    drive(slot, SeedStage.GERMINATED)
    assert slot.advance_stage(SeedStage.PRUNED).passed
    assert slot.stage == SeedStage.PRUNED and slot.seed is None


@pytest.mark.parametrize(
    "stage", [SeedStage.DORMANT, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING]
)
def test_prune_returns_false_when_there_is_no_seed(stage):
    slot = _slot(embargo_epochs=1)
    if stage != SeedStage.DORMANT:
        drive(slot, SeedStage.GERMINATED)
        slot.prune()
        while slot.stage != stage:
            slot.step_epoch()
    before = snapshot(slot)
    assert slot.prune() is False
    assert_unchanged(slot, before)


def test_pruning_a_fossilized_seed_raises():
    slot = _slot(min_training_epochs=0)
    drive(slot, SeedStage.FOSSILIZED)
    before = snapshot(slot)
    with pytest.raises(IllegalTransitionError, match="FOSSILIZED") as err:
        slot.prune()
    assert isinstance(err.value, RuntimeError) and "'r0c2'" in str(err.value)
    assert_unchanged(slot, before)


def test_fossilized_is_terminal_and_keeps_blending():
    slot = _slot(min_training_epochs=0)
    drive(slot, SeedStage.FOSSILIZED)
    for _ in range(3):
        slot.step_epoch()
    assert slot.stage == SeedStage.FOSSILIZED and slot.alpha == 1.0
    x = features(slot)
    with torch.no_grad():
        assert torch.equal(slot(x), slot.seed(x))

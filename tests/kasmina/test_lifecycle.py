"""Lifecycle property test: random sequences of every lifecycle call on a tiny model.

Whatever the sequence (width blueprints included: they are in the registry's names), the stage
stays in the reachable set, every stage change is in ``VALID_TRANSITIONS``, and a refused call
(an exception or a failed ``GateResult``) leaves the slot's state, alpha and seed parameters
exactly as they were.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from esper.errors import EsperError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.gates import GateResult
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage, is_valid_transition

from .helpers import FAST_GATES, assert_unchanged, host_input, snapshot, tiny_model

BLUEPRINTS = [*BlueprintRegistry.names("cnn"), "no_such_seed", "lora"]
EMPTY = {SeedStage.DORMANT, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING}
REACHABLE = set(SeedStage) - {SeedStage.UNKNOWN}
ALPHAS = st.one_of(st.floats(-2.0, 3.0), st.sampled_from([0.0, 1.0, float("nan"), float("inf")]))


class SlotLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = tiny_model("cnn", gates=FAST_GATES)
        self.slot = self.model.slot("r0c1")
        self.other = self.model.slot("r0c0")
        self.x = host_input("cnn")
        self.transitions: list[tuple[SeedStage, SeedStage]] = []

    def _call(self, fn, *args, **kwargs):
        """Run a lifecycle call; a refusal must change nothing, a stage change must be legal."""
        before, stage = snapshot(self.slot), self.slot.stage
        other = snapshot(self.other)
        try:
            result = fn(*args, **kwargs)
        except (ValueError, RuntimeError) as exc:
            # Refused: a typed user error (or ValueError from a bad enum) and nothing changed.
            assert isinstance(exc, EsperError | ValueError), exc
            assert_unchanged(self.slot, before)
            assert_unchanged(self.other, other)
            return None
        if isinstance(result, GateResult) and not result.passed:
            assert result.checks_failed
            assert_unchanged(self.slot, before)
        if result is False:  # prune() with nothing to remove
            assert_unchanged(self.slot, before)
        assert_unchanged(self.other, other)
        if self.slot.stage != stage:
            assert is_valid_transition(stage, self.slot.stage), (stage, self.slot.stage)
            self.transitions.append((stage, self.slot.stage))
        return result

    @rule(
        blueprint=st.sampled_from(BLUEPRINTS),
        algorithm=st.sampled_from([*AlphaAlgorithm, 0]),
        curve=st.sampled_from(list(AlphaCurve)),
        tempo=st.sampled_from([1, 2, 3, 0, -1]),
    )
    def germinate(self, blueprint, algorithm, curve, tempo):
        was_empty = self.slot.stage == SeedStage.DORMANT
        self._call(
            self.slot.germinate,
            blueprint,
            alpha_algorithm=algorithm,
            alpha_curve=curve,
            blend_tempo_epochs=tempo,
        )
        if was_empty and self.slot.stage == SeedStage.GERMINATED:
            assert self.slot.alpha == 0.0  # a new seed starts at alpha 0, whatever was set before
            assert self.slot.alpha_tensor.item() == 0.0

    @rule(stage=st.one_of(st.none(), st.sampled_from([*SeedStage, 42])))
    def advance(self, stage):
        self._call(self.slot.advance_stage, stage)

    @rule()
    def advance_next(self):
        self._call(self.slot.advance_stage)

    @rule()
    def prune(self):
        self._call(self.slot.prune, "random")

    @rule()
    def step_epoch(self):
        self._call(self.slot.step_epoch)

    @rule(value=ALPHAS)
    def set_alpha(self, value):
        self._call(self.slot.set_alpha, value)

    @rule(value=ALPHAS, steps=st.integers(-1, 3), curve=st.sampled_from([None, *AlphaCurve]))
    def set_alpha_target(self, value, steps, curve):
        self._call(self.slot.set_alpha_target, value, steps=steps, alpha_curve=curve)

    @rule(value=st.floats(-1.0, 1.0))
    def record_contribution(self, value):
        self._call(self.slot.record_contribution, value)

    @rule(poison=st.booleans(), zero=st.booleans())
    def backward(self, poison, zero):
        if zero:
            self.model.zero_grad(set_to_none=True)
        x = self.x.clone()
        if poison:
            x[0, 0, 0, 0] = float("nan")
        before = snapshot(self.slot)
        out = self.model(x)
        assert out.shape == (2, 3)
        if not poison:
            assert bool(out.isfinite().all())
        out.square().mean().backward()
        assert_unchanged(self.slot, before)  # forward and backward never change lifecycle state

    @rule(
        epochs=st.integers(1, 6),
        blueprint=st.sampled_from(["noop", "conv_small", "attention"]),
        algorithm=st.sampled_from(list(AlphaAlgorithm)),
    )
    def train_epochs(self, epochs, blueprint, algorithm):
        """What a trainer does: germinate when empty, then per epoch a backward, a tick, an advance."""
        for _ in range(epochs):
            if self.slot.stage == SeedStage.DORMANT:
                self._call(self.slot.germinate, blueprint, alpha_algorithm=algorithm, blend_tempo_epochs=2)
            self.backward(poison=False, zero=True)
            self._call(self.slot.step_epoch)
            self._call(self.slot.advance_stage)

    @precondition(lambda self: self.slot.stage == SeedStage.HOLDING)
    @rule()
    def fossilize(self):
        self._call(self.slot.record_contribution, 1.0)
        for _ in range(FAST_GATES.min_holding_epochs):
            self._call(self.slot.step_epoch)
        self._call(self.slot.advance_stage)

    @invariant()
    def consistent(self):
        slot = self.slot
        assert slot.stage in REACHABLE
        gated = slot.seed is not None and slot.alpha_algorithm == AlphaAlgorithm.GATE
        assert (slot.gate is not None) == gated
        assert 0.0 <= slot.alpha <= 1.0 and not math.isnan(slot.alpha)
        assert slot.alpha_tensor.dtype == torch.float32
        assert slot.alpha_tensor.item() == torch.tensor(slot.alpha).item()
        # A width seed (widen, widen_half) is routed by the host, not called as the slot's forward,
        # and once fossilized its units are host channels: no seed, the record stays.
        width = slot.state.width is not None
        merged = width and slot.stage == SeedStage.FOSSILIZED
        live = slot.stage in {SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED}
        assert slot.active == (live and not width)
        assert slot.widening == (live and width and not merged)
        assert (slot.seed is None) == (slot.stage in EMPTY or merged)
        assert (slot.state.blueprint_id is None) == (slot.seed is None and not merged)


TestSlotLifecycle = SlotLifecycle.TestCase
TestSlotLifecycle.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

"""The heuristic controller, rule by rule, on hand-built observations."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from esper.leyline.actions import WAIT, Action, LifecycleOp
from esper.leyline.observation import Observation, SlotObservation
from esper.leyline.stages import SeedStage
from esper.tamiyo.factory import make_controller
from esper.tamiyo.heuristic import DEFAULT_ROTATION, HeuristicConfig, HeuristicPolicy
from esper.tolaria.config import RunConfig

CNN_BLUEPRINTS = (
    "attention",
    "bottleneck",
    "conv_heavy",
    "conv_light",
    "conv_small",
    "depthwise",
    "noop",
    "norm",
)
COSTS = {
    "conv_heavy": 900,
    "conv_light": 300,
    "bottleneck": 200,
    "depthwise": 120,
    "attention": 60,
    "conv_small": 150,
    "norm": 20,
    "noop": 0,
}
PLATEAU = (0.50, 0.60, 0.60, 0.60, 0.60)  # 3 epochs without improvement
RISING = (0.50, 0.55, 0.60, 0.65, 0.70)


def _slot(slot_id: str, stage: SeedStage = SeedStage.DORMANT, **kw: Any) -> SlotObservation:
    if stage != SeedStage.DORMANT:
        kw.setdefault("blueprint", "conv_light")
    return SlotObservation(slot_id=slot_id, channels=8, stage=stage, **kw)


def _obs(
    *slots: SlotObservation,
    history: tuple[float, ...] = PLATEAU,
    seed_params: int = 0,
    max_seed_params: int | None = None,
) -> Observation:
    slots = slots or (_slot("r0c0"), _slot("r0c1"))
    return Observation(
        epoch=len(history) - 1,
        max_epochs=30,
        topology="cnn",
        train_loss=1.0,
        train_accuracy=history[-1],
        val_loss=1.0,
        val_accuracy=history[-1],
        val_accuracy_history=history,
        train_loss_history=tuple(1.0 for _ in history),
        host_params=1000,
        seed_params=seed_params,
        max_seed_params=max_seed_params,
        slots=slots,
        blueprints=CNN_BLUEPRINTS,
        blueprint_params={s.slot_id: dict(COSTS) for s in slots},
    )


def _policy(**kw: Any) -> HeuristicPolicy:
    """The plateau rule alone, one seed in flight (the defaults grow early, two at once: tested
    below), so each test isolates one rule."""
    return HeuristicPolicy(
        HeuristicConfig(**{"plateau_window": 3, "germinate_after": None, "max_in_flight": 1, **kw})
    )


RESIDUAL_ROTATION = [b for b in DEFAULT_ROTATION["cnn"] if b in CNN_BLUEPRINTS]
"""The default rotation as these observations offer it (no width blueprints in CNN_BLUEPRINTS)."""


# ----------------------------------------------------------------------------- germinate
def test_germinates_the_first_rotation_blueprint_on_a_plateau() -> None:
    action = _policy(blend_tempo_epochs=4).decide(_obs())
    assert action.op == LifecycleOp.GERMINATE
    assert action.slot == "r0c0" and action.blueprint == RESIDUAL_ROTATION[0] == "conv_heavy"
    assert action.tempo_epochs == 4


def test_width_comes_first_in_the_default_rotations() -> None:
    # Small hosts are bound by width; residual seeds at the slot's width add only depth.
    assert DEFAULT_ROTATION["cnn"][:2] == ("widen", "widen_half")
    assert DEFAULT_ROTATION["transformer"][0] == "widen_mlp"


def _width_obs(*slots: SlotObservation, history: tuple[float, ...] = RISING) -> Observation:
    blueprints = ("widen", "widen_half", *CNN_BLUEPRINTS)
    costs = {**COSTS, "widen": 500, "widen_half": 250}
    obs = _obs(*slots, history=history)
    return dataclasses.replace(
        obs, blueprints=blueprints, blueprint_params={s.slot_id: costs for s in obs.slots}
    )


def test_by_default_it_grows_width_early_in_both_slots_without_a_plateau() -> None:
    policy = HeuristicPolicy()
    assert (policy.config.germinate_after, policy.config.max_in_flight) == (0, 2)
    first = policy.decide(_width_obs())  # accuracy still rising: no plateau needed
    assert (first.op, first.slot, first.blueprint) == (LifecycleOp.GERMINATE, "r0c0", "widen")
    busy = _slot("r0c0", SeedStage.TRAINING, blueprint="widen", epochs_in_stage=1)
    second = policy.decide(_width_obs(busy, _slot("r0c1")))
    # Each slot starts at the head of the rotation: both are offered full width first.
    assert (second.op, second.slot, second.blueprint) == (LifecycleOp.GERMINATE, "r0c1", "widen")
    assert policy.state_dict()["germinated_in"] == {"r0c0": 1, "r0c1": 1}


def test_half_width_is_the_fallback_when_full_width_does_not_fit() -> None:
    obs = dataclasses.replace(_width_obs(), seed_params=600, max_seed_params=1000)  # 400 left
    action = HeuristicPolicy().decide(obs)
    assert (action.op, action.blueprint) == (LifecycleOp.GERMINATE, "widen_half")  # 500 > 400 >= 250


def test_germinate_after_waits_for_its_epoch_and_none_waits_for_a_plateau() -> None:
    early = _width_obs(history=RISING[:2])  # epoch 1
    assert HeuristicPolicy(HeuristicConfig(germinate_after=2)).decide(early) == WAIT
    assert HeuristicPolicy(HeuristicConfig(germinate_after=1)).decide(early).op == LifecycleOp.GERMINATE
    assert HeuristicPolicy(HeuristicConfig(germinate_after=None)).decide(_width_obs()) == WAIT
    plateau = _width_obs(history=PLATEAU)
    assert HeuristicPolicy(HeuristicConfig(germinate_after=None)).decide(plateau).op == LifecycleOp.GERMINATE


def test_no_germination_while_accuracy_still_improves() -> None:
    assert _policy().decide(_obs(history=RISING)) == WAIT


def test_plateau_window_and_min_delta_decide_what_a_plateau_is() -> None:
    small_gains = (0.500, 0.501, 0.502, 0.503, 0.504)
    assert _policy(plateau_min_delta=0.005).decide(_obs(history=small_gains)).op == LifecycleOp.GERMINATE
    assert _policy(plateau_min_delta=0.0005).decide(_obs(history=small_gains)) == WAIT
    assert _policy(plateau_window=5).decide(_obs()) == WAIT


def test_no_germination_without_a_free_slot() -> None:
    full = _obs(_slot("r0c0", SeedStage.FOSSILIZED), _slot("r0c1", SeedStage.EMBARGOED))
    assert _policy().decide(full) == WAIT


def test_no_germination_while_a_seed_is_in_flight() -> None:
    busy = _obs(_slot("r0c0", SeedStage.TRAINING, epochs_in_stage=1), _slot("r0c1"))
    assert _policy().decide(busy) == WAIT
    assert _policy(max_in_flight=2).decide(busy) == Action(
        LifecycleOp.GERMINATE, slot="r0c1", blueprint="conv_heavy", tempo_epochs=5
    )


def test_germinates_into_a_free_slot_next_to_a_fossilized_one() -> None:
    action = _policy().decide(_obs(_slot("r0c0", SeedStage.FOSSILIZED), _slot("r0c1")))
    assert action.op == LifecycleOp.GERMINATE and action.slot == "r0c1"


def test_the_parameter_budget_skips_blueprints_that_do_not_fit() -> None:
    # 1000 - 500 already used = 500 left: conv_heavy (900) does not fit, conv_light (300) does.
    action = _policy().decide(_obs(seed_params=500, max_seed_params=1000))
    assert action.op == LifecycleOp.GERMINATE and action.blueprint == "conv_light"
    assert COSTS[action.blueprint] <= 500


def test_no_germination_when_nothing_fits_the_budget() -> None:
    policy = _policy(blueprints=("conv_heavy", "conv_light"))
    assert policy.decide(_obs(seed_params=900, max_seed_params=1000)) == WAIT


def test_blueprints_rotate_between_germinations_in_a_slot() -> None:
    # The rotation is per slot (each slot starts width-first), so one slot shows it.
    policy = _policy()
    picked = []
    for _ in range(3):
        action = policy.decide(_obs(_slot("r0c0")))
        assert action.op == LifecycleOp.GERMINATE
        picked.append(action.blueprint)
    assert picked == RESIDUAL_ROTATION[:3]


def test_a_configured_rotation_is_used_in_order() -> None:
    policy = _policy(blueprints=("norm", "attention"))
    assert [policy.decide(_obs(_slot("r0c0"))).blueprint for _ in range(3)] == ["norm", "attention", "norm"]
    # A second slot starts its own walk at the head of the rotation.
    assert policy.decide(_obs(_slot("r0c0", SeedStage.FOSSILIZED), _slot("r0c1"))).blueprint == "norm"


# ----------------------------------------------------------------------------- prune
def test_prunes_a_seed_whose_contribution_stays_negative() -> None:
    hurting = _slot("r0c0", SeedStage.BLENDING, contribution=-0.02, contribution_history=(0.01, -0.01, -0.02))
    assert _policy(prune_patience=2).decide(_obs(hurting)) == Action(LifecycleOp.PRUNE, slot="r0c0")


def test_one_negative_measurement_is_not_enough() -> None:
    wobbly = _slot("r0c0", SeedStage.BLENDING, contribution=-0.02, contribution_history=(0.01, -0.02))
    assert _policy(prune_patience=2).decide(_obs(wobbly, history=RISING)) == WAIT


@pytest.mark.parametrize(
    ("stage", "budget"),
    [(SeedStage.TRAINING, 3 + 4), (SeedStage.BLENDING, 5 + 4), (SeedStage.GERMINATED, 1 + 4)],
)
def test_prunes_a_seed_that_stalls_in_its_stage(stage: SeedStage, budget: int) -> None:
    policy = _policy(stall_epochs=4, blend_tempo_epochs=5)
    on_time = _slot("r0c0", stage, epochs_in_stage=budget)
    stalled = _slot("r0c0", stage, epochs_in_stage=budget + 1)
    assert policy.decide(_obs(on_time, history=RISING)) == WAIT
    assert policy.decide(_obs(stalled, history=RISING)) == Action(LifecycleOp.PRUNE, slot="r0c0")


def test_a_pruned_blueprint_is_pushed_back_in_the_rotation() -> None:
    policy = _policy(blueprint_penalty=2)
    hurting = _slot("r0c0", SeedStage.HOLDING, blueprint="conv_heavy", contribution_history=(-0.1, -0.1))
    assert policy.decide(_obs(hurting)).op == LifecycleOp.PRUNE
    assert policy.penalties == {"conv_heavy": 1}
    # The rotation would start at conv_heavy; its penalty (1 x 2) puts conv_light first.
    assert policy.decide(_obs()).blueprint == "conv_light"


def test_the_penalty_grows_with_each_prune() -> None:
    policy = _policy(blueprints=("conv_heavy", "conv_light", "norm"), blueprint_penalty=1)
    for _ in range(3):
        policy.decide(
            _obs(_slot("r0c0", SeedStage.BLENDING, blueprint="conv_light", contribution_history=(-1, -1)))
        )
    assert policy.penalties == {"conv_light": 3}
    picks = [policy.decide(_obs()).blueprint for _ in range(3)]
    assert picks.count("conv_light") == 0


# ----------------------------------------------------------------------------- advance / fossilize
def test_fossilizes_a_ready_holding_seed() -> None:
    ready = _slot("r0c1", SeedStage.HOLDING, gate_ready=True, contribution=0.03, contribution_history=(0.03,))
    assert _policy().decide(_obs(_slot("r0c0"), ready)) == Action(LifecycleOp.FOSSILIZE, slot="r0c1")


def test_waits_for_a_holding_seed_that_is_not_ready() -> None:
    waiting = _slot("r0c1", SeedStage.HOLDING, gate_ready=False, contribution_history=(0.03,))
    assert _policy().decide(_obs(_slot("r0c0"), waiting)) == WAIT


@pytest.mark.parametrize("stage", [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING])
def test_advances_a_seed_whose_gate_passes(stage: SeedStage) -> None:
    ready = _slot("r0c0", stage, gate_ready=True)
    assert _policy().decide(_obs(ready, history=RISING)) == Action(LifecycleOp.ADVANCE, slot="r0c0")
    assert _policy().decide(_obs(_slot("r0c0", stage), history=RISING)) == WAIT


def test_prune_comes_before_fossilize_before_advance() -> None:
    hurting = _slot("r0c0", SeedStage.BLENDING, contribution_history=(-0.1, -0.1), gate_ready=True)
    ready = _slot("r0c1", SeedStage.HOLDING, gate_ready=True, contribution_history=(0.1,))
    assert _policy(max_in_flight=2).decide(_obs(hurting, ready)).op == LifecycleOp.PRUNE
    advancing = _slot("r0c0", SeedStage.TRAINING, gate_ready=True)
    assert _policy(max_in_flight=2).decide(_obs(advancing, ready)).op == LifecycleOp.FOSSILIZE


# ----------------------------------------------------------------------------- state
def test_state_dict_round_trip_continues_identically() -> None:
    policy = _policy()
    policy.decide(
        _obs(_slot("r0c0", SeedStage.BLENDING, blueprint="depthwise", contribution_history=(-1, -1)))
    )
    policy.decide(_obs())
    state = policy.state_dict()
    assert state["penalties"] == {"depthwise": 1} and state["germinated"] == 1

    restored = _policy()
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    for _ in range(4):
        assert restored.decide(_obs()) == policy.decide(_obs())


def test_state_dict_holds_only_primitives() -> None:
    def primitive(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and primitive(v) for k, v in value.items())
        if isinstance(value, list):
            return all(primitive(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    policy = _policy(blueprints=("norm",))
    assert primitive(policy.state_dict())


@pytest.mark.parametrize(
    "bad",
    [
        {"plateau_window": 0},
        {"prune_patience": 0},
        {"max_in_flight": 0},
        {"stall_epochs": -1},
        {"germinate_after": -1},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        HeuristicConfig(**bad)


def test_the_training_stall_budget_follows_the_gate_length() -> None:
    policy = _policy(stall_epochs=2, min_training_epochs=6)
    assert policy.decide(_obs(_slot("r0c0", SeedStage.TRAINING, epochs_in_stage=8), history=RISING)) == WAIT
    stalled = _slot("r0c0", SeedStage.TRAINING, epochs_in_stage=9)
    assert policy.decide(_obs(stalled, history=RISING)) == Action(LifecycleOp.PRUNE, slot="r0c0")


def test_the_factory_passes_the_run_gates_to_the_heuristic() -> None:
    policy = make_controller(RunConfig(min_training_epochs=7, blend_tempo_epochs=4, germinate_after=None,
                                       max_in_flight=1))  # fmt: skip
    assert isinstance(policy, HeuristicPolicy)
    assert (policy.config.min_training_epochs, policy.config.blend_tempo_epochs) == (7, 4)
    assert (policy.config.germinate_after, policy.config.max_in_flight) == (None, 1)

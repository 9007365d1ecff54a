"""Baseline controllers: static never acts; random picks seeded, stage-appropriate actions."""

from __future__ import annotations

from collections import Counter

import torch

from esper import CNNHost, MorphogeneticModel, QualityGates
from esper.leyline.actions import ALPHA_TARGETS, TEMPO_EPOCHS, WAIT, LifecycleOp
from esper.leyline.legality import JointLegality
from esper.leyline.observation import Observation, Policy, SlotObservation
from esper.leyline.stages import SeedStage
from esper.tamiyo.simple import RandomPolicy, StaticPolicy
from esper.tolaria.lifecycle import apply_action, observe

BLUEPRINTS = ("conv_light", "norm", "attention")
STAGES = (
    SeedStage.DORMANT,
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
    SeedStage.EMBARGOED,
)


def _obs(*stages: SeedStage) -> Observation:
    live = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)
    slots = tuple(
        SlotObservation(slot_id=f"r0c{i}", channels=8, stage=s, gate_ready=s in live)
        for i, s in enumerate(stages)
    )
    return Observation(
        epoch=3,
        max_epochs=10,
        topology="cnn",
        train_loss=1.0,
        train_accuracy=0.5,
        val_loss=1.0,
        val_accuracy=0.5,
        val_accuracy_history=(0.5,),
        train_loss_history=(1.0,),
        host_params=100,
        seed_params=0,
        max_seed_params=None,
        slots=slots,
        blueprints=BLUEPRINTS,
    )


def test_both_follow_the_policy_protocol() -> None:
    assert isinstance(StaticPolicy(), Policy) and isinstance(RandomPolicy(), Policy)
    assert (StaticPolicy.name, RandomPolicy.name) == ("static", "random")


def test_static_always_waits() -> None:
    policy = StaticPolicy()
    for stage in STAGES:
        assert policy.decide(_obs(stage, SeedStage.DORMANT)) == WAIT
    assert policy.state_dict() == {}
    policy.load_state_dict({})


def test_random_with_no_slot_to_act_on_waits() -> None:
    policy = RandomPolicy(seed=0)
    assert all(policy.decide(_obs(SeedStage.FOSSILIZED, SeedStage.EMBARGOED)) == WAIT for _ in range(20))


def test_random_actions_are_all_legal_by_the_doors_table() -> None:
    policy = RandomPolicy(seed=1)
    obs = _obs(*STAGES)
    legal = JointLegality.from_observation(obs)
    ops: Counter[LifecycleOp] = Counter()
    for _ in range(600):
        action = policy.decide(obs)
        ops[action.op] += 1
        assert legal.refusal(obs, action) is None, action
        if action.op == LifecycleOp.GERMINATE:
            assert action.blueprint in BLUEPRINTS and action.tempo_epochs in TEMPO_EPOCHS
        if action.op == LifecycleOp.SET_ALPHA_TARGET:
            assert action.alpha_target in ALPHA_TARGETS
    assert set(ops) == set(LifecycleOp)  # every operation shows up


def test_random_is_seeded() -> None:
    obs = _obs(SeedStage.DORMANT, SeedStage.HOLDING)
    a, b, c = RandomPolicy(seed=7), RandomPolicy(seed=7), RandomPolicy(seed=8)
    run_a = [a.decide(obs) for _ in range(50)]
    assert run_a == [b.decide(obs) for _ in range(50)]
    assert run_a != [c.decide(obs) for _ in range(50)]


def test_random_state_dict_round_trip_continues_the_sequence() -> None:
    obs = _obs(SeedStage.DORMANT, SeedStage.BLENDING)
    policy = RandomPolicy(seed=3)
    for _ in range(5):
        policy.decide(obs)
    restored = RandomPolicy(seed=99)
    restored.load_state_dict(policy.state_dict())
    assert [restored.decide(obs) for _ in range(30)] == [policy.decide(obs) for _ in range(30)]


def test_random_actions_on_a_real_model_never_raise() -> None:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, embargo_epochs=1))
    policy = RandomPolicy(seed=5)
    history = [{"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}]
    x = torch.randn(2, 1, 8, 8)
    applied = 0
    for epoch in range(40):
        model(x).sum().backward()
        for slot in model.slots():
            slot.step_epoch()
        obs = observe(
            model, epoch=epoch, max_epochs=40, history=history, max_seed_params=None, blueprints=BLUEPRINTS
        )
        applied += apply_action(model, policy.decide(obs)).applied
    assert applied > 10

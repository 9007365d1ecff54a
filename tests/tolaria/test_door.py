"""The engine's door: every controller and any action sequence stays inside the transition table
and the seed budget, and the optimizer always holds exactly the live parameters."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolaria_kit import assert_valid_stage_chains, fast_config, make_engine, tiny_task

from esper.leyline.actions import ALPHA_TARGETS, BLEND_STYLES, TEMPO_EPOCHS, Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.events import StageChanged
from esper.leyline.stages import SeedStage
from esper.nissa.telemetry import MemorySink, Telemetry
from esper.simic.env import MorphogenesisEnv
from esper.tamiyo.features import observation_features
from esper.tamiyo.heuristic import HeuristicConfig, HeuristicPolicy
from esper.tamiyo.learned import LearnedPolicy
from esper.tamiyo.masks import ActionLayout
from esper.tamiyo.policy_net import FactoredPolicy, save_policy
from esper.tamiyo.simple import RandomPolicy, StaticPolicy
from esper.tolaria.engine import Engine

BUDGET = 60  # fits noop/norm/attention/depthwise at the tiny host's slots, not the conv seeds


def _optimizer_holds_exactly_the_live_parameters(engine: Engine) -> None:
    held = [id(p) for g in engine.optimizer.param_groups for p in g["params"]]
    assert sorted(held) == sorted(id(p) for p in engine.model.parameters())
    live = {id(p) for p in engine.model.parameters()}
    assert all(id(p) in live for p in engine.optimizer.state)  # no state of a pruned seed is left


def _poison(engine: Engine, epochs: set[int]) -> None:
    real = engine.trainer.loss_fn

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = real(logits, y)
        return loss * math.nan if engine.epoch in epochs else loss

    engine.trainer.loss_fn = loss_fn


def _learned(tmp_path: Path, engine: Engine) -> LearnedPolicy:
    engine.train_epoch()
    obs = engine.observe()
    layout = ActionLayout.from_observation(obs)
    torch.manual_seed(0)
    save_policy(
        FactoredPolicy(observation_features(obs).shape[0], layout.head_sizes, hidden=8), tmp_path / "p.pt"
    )
    return LearnedPolicy(tmp_path / "p.pt", seed=0)


@pytest.mark.parametrize("name", ["static", "random", "heuristic", "learned"])
def test_every_controller_keeps_to_the_budget_and_the_table_through_nan_epochs(
    tmp_path: Path, name: str
) -> None:
    sink = MemorySink()
    config = fast_config(tmp_path, epochs=10, max_seed_params=BUDGET, embargo_epochs=0)
    engine = make_engine(config, telemetry=Telemetry([sink]))
    controllers = {
        "static": lambda: StaticPolicy(),
        "random": lambda: RandomPolicy(seed=3),
        "heuristic": lambda: HeuristicPolicy(HeuristicConfig(plateau_window=1, plateau_min_delta=0.5)),
        "learned": lambda: _learned(tmp_path, engine),
    }
    controller = controllers[name]()
    _poison(engine, {4, 7})
    refused = 0
    while engine.epoch < 10:
        engine.train_epoch()
        outcome = engine.ask(controller)
        refused += not outcome.applied
        assert engine.model.active_seed_params <= BUDGET
        _optimizer_holds_exactly_the_live_parameters(engine)
    assert engine.governor.rollbacks == 2
    assert_valid_stage_chains(sink.events)
    if name in ("random", "heuristic"):
        assert engine.counters["seeds_germinated"] >= 1 and refused == 0  # they only pick legal actions


def test_a_germination_over_the_budget_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    engine = make_engine(fast_config(tmp_path, max_seed_params=BUDGET))
    engine.train_epoch()
    before = {k: v.clone() for k, v in engine.model.state_dict().items() if isinstance(v, torch.Tensor)}
    groups = len(engine.optimizer.param_groups)
    outcome = engine.apply(Action(LifecycleOp.GERMINATE, slot="r0c1", blueprint="conv_heavy"))
    assert not outcome.applied and "max_seed_params=60" in outcome.reason and "conv_heavy" in outcome.reason
    assert engine.model.slot("r0c1").stage == SeedStage.DORMANT
    assert len(engine.optimizer.param_groups) == groups
    after = engine.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_a_budget_smaller_than_every_blueprint_is_an_error_before_training(tmp_path: Path) -> None:
    from esper.errors import ConfigError

    with pytest.raises(ConfigError, match=r"smaller than every blueprint.*'norm'"):
        make_engine(fast_config(tmp_path, max_seed_params=1, blueprints=["norm", "conv_heavy"]))


_ACTION = st.builds(
    Action,
    op=st.sampled_from(list(LifecycleOp)),
    slot=st.sampled_from(["r0c0", "r0c1", "nope"]),
    blueprint=st.sampled_from(["noop", "norm", "conv_light", "conv_heavy", "attention", "bogus"]),
    alpha_curve=st.sampled_from([c for c, _ in BLEND_STYLES]),
    alpha_algorithm=st.sampled_from(list(AlphaAlgorithm)),
    tempo_epochs=st.sampled_from(TEMPO_EPOCHS),
    alpha_target=st.sampled_from(ALPHA_TARGETS),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.lists(_ACTION, min_size=1, max_size=3), min_size=6, max_size=10))
def test_random_action_sequences_never_leave_the_table_or_the_budget(tmp_path: Path, actions) -> None:
    sink = MemorySink()
    config = fast_config(tmp_path, epochs=len(actions), max_seed_params=400, embargo_epochs=1)
    engine = make_engine(config, tiny_task(n_train=64, n_val=32), Telemetry([sink]))
    for epoch_actions in actions:
        engine.train_epoch()
        for action in epoch_actions:
            engine.apply(action)  # illegal ones are refused and change nothing
            assert engine.model.active_seed_params <= 400
            _optimizer_holds_exactly_the_live_parameters(engine)
    assert_valid_stage_chains(sink.events)


def test_env_germinate_then_a_nan_epoch_keeps_the_seed_and_the_table(monkeypatch) -> None:
    """Regression: the env applied its action after the rollback point was taken, so a NaN
    epoch made the new seed vanish with GERMINATED->DORMANT and no seed_pruned."""
    env = MorphogenesisEnv(task="digits-impaired", episode_length=3)
    env.reset(seed=0)
    engine = env.engine
    assert engine is not None
    _poison(engine, {1})
    vec = env.layout.encode(Action(LifecycleOp.GERMINATE, slot="r0c0", blueprint="norm"))
    _, _, _, _, info = env.step(vec)
    assert not info["illegal_action"] and engine.governor.rollbacks == 1
    assert engine.model.slot("r0c0").stage == SeedStage.GERMINATED
    stage_events = [e for e in env._events.events if isinstance(e, StageChanged)]
    assert_valid_stage_chains(stage_events)
    vec = env.layout.encode(Action(LifecycleOp.ADVANCE, slot="r0c0"))
    env.step(vec)
    assert np.isfinite(env.observation.val_accuracy)

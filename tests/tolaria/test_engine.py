"""Engine: determinism, exact resume, governor rollback, --compile with many growth events, AMP."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch._dynamo
from tolaria_kit import (
    RESIDUAL,
    ScriptedPolicy,
    assert_valid_stage_chains,
    churn,
    drive,
    fast_config,
    make_engine,
    run_to_disk,
    tiny_task,
)
from torch._dynamo.exc import FailOnRecompileLimitHit
from torch._dynamo.utils import counters

from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.events import Rollback, SeedPruned
from esper.leyline.observation import Observation, Policy
from esper.leyline.stages import SeedStage
from esper.nissa.telemetry import MemorySink, Telemetry
from esper.recipes.train import resolve_config, restore
from esper.tamiyo.factory import make_controller
from esper.tolaria.checkpoint import CHECKPOINT_NAME, load_checkpoint
from esper.tolaria.config import RunConfig
from esper.tolaria.engine import Engine


def _run(config: RunConfig, sink: MemorySink | None = None) -> tuple[Engine, Policy]:
    return run_to_disk(config, telemetry=Telemetry([sink] if sink else []))


def _assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    first, _ = _run(fast_config(tmp_path / "a", epochs=6, seed=3))
    second, _ = _run(fast_config(tmp_path / "b", epochs=6, seed=3))
    assert first.history == second.history
    assert first.counters == second.counters
    _assert_same_state(first.model.state_dict(), second.model.state_dict())
    other, _ = _run(fast_config(tmp_path / "c", epochs=2, seed=4))
    assert other.history != first.history[:2]


@pytest.mark.slow
def test_resume_reaches_the_same_final_state_as_an_uninterrupted_run(tmp_path: Path) -> None:
    events = MemorySink()
    straight, straight_ctl = _run(fast_config(tmp_path / "straight", epochs=10, blueprints=RESIDUAL), events)
    assert straight.counters["seeds_germinated"] >= 2 and straight.counters["seeds_fossilized"] >= 1

    _run(fast_config(tmp_path / "split", epochs=5, blueprints=RESIDUAL))
    saved = load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)
    assert saved["epoch"] == 5
    stages = [s["stage"] for k, s in saved["model"].items() if k.endswith("_extra_state")]
    assert any(stage != SeedStage.DORMANT for stage in stages)  # the split falls mid-growth

    config = fast_config(tmp_path / "split", epochs=10, blueprints=RESIDUAL)
    resumed = make_engine(config)  # a fresh engine, model and controller
    controller = make_controller(config)
    restore(resumed, controller, saved, tmp_path / "split")
    assert resumed.epoch == 5
    drive(resumed, controller)

    assert resumed.history == straight.history
    assert resumed.counters == straight.counters
    _assert_same_state(resumed.model.state_dict(), straight.model.state_dict())
    _assert_same_state(controller.state_dict(), straight_ctl.state_dict())
    opt_a, opt_b = resumed.optimizer.state_dict(), straight.optimizer.state_dict()
    assert [g.get("esper_slot") for g in opt_a["param_groups"]] == [
        g.get("esper_slot") for g in opt_b["param_groups"]
    ]
    for pid, st in opt_b["state"].items():
        assert torch.equal(opt_a["state"][pid]["exp_avg"], st["exp_avg"])
    assert_valid_stage_chains(events.events)


def _blend_r0c1(obs: Observation) -> Action | None:
    """Germinate in r0c1 at once and push it to BLENDING (a long ramp), then wait."""
    slot = obs.slot("r0c1")
    if slot.stage == SeedStage.DORMANT and obs.epoch == 0:
        return Action(LifecycleOp.GERMINATE, slot="r0c1", blueprint="conv_light", tempo_epochs=8)
    if slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
        return Action(LifecycleOp.ADVANCE, slot="r0c1")
    return None


def _poison(engine: Engine, epochs: set[int]) -> None:
    """Make the loss NaN in the given epochs."""
    real_loss = engine.trainer.loss_fn

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = real_loss(logits, y)
        return loss * math.nan if engine.epoch in epochs else loss

    engine.trainer.loss_fn = loss_fn


def test_a_nan_loss_rolls_back_prunes_the_blending_seed_and_training_goes_on(tmp_path: Path) -> None:
    sink = MemorySink()
    engine = make_engine(fast_config(tmp_path, epochs=8), telemetry=Telemetry([sink]))
    controller = ScriptedPolicy(_blend_r0c1)
    poisoned_epoch = 4
    _poison(engine, {poisoned_epoch})
    drive(engine, controller, until=poisoned_epoch)
    assert engine.model.slot("r0c1").stage == SeedStage.BLENDING
    good_host = {k: v.clone() for k, v in engine.model.host.state_dict().items()}
    host_params = engine.model.get_host_parameters()
    good_opt = [engine.optimizer.state[p]["exp_avg"].clone() for p in host_params]

    engine.train_epoch()  # the poisoned epoch: NaN loss, NaN weights after the step

    (rollback,) = [e for e in sink.events if isinstance(e, Rollback)]
    assert rollback.epoch == poisoned_epoch and rollback.restored_epoch == poisoned_epoch
    assert rollback.pruned_slot == "r0c1" and rollback.reason.startswith("non-finite loss")
    (pruned,) = [e for e in sink.events if isinstance(e, SeedPruned)]
    assert pruned.slot == "r0c1" and pruned.reason.startswith("rollback")
    assert engine.model.slot("r0c1").seed is None
    for key, value in engine.model.host.state_dict().items():
        assert torch.equal(value, good_host[key]), key  # restored, not stepped with NaN gradients
    for p, v in zip(host_params, good_opt, strict=True):
        assert torch.equal(engine.optimizer.state[p]["exp_avg"], v)
    assert "r0c1" not in engine.groups.seed_groups()
    assert engine.governor.rollbacks == 1 and engine.counters["seeds_pruned"] == 1

    drive(engine, controller, until=poisoned_epoch + 4)
    after = [h["train_loss"] for h in engine.history[poisoned_epoch + 1 :]]
    assert len(after) == 3 and all(math.isfinite(v) for v in after)
    assert after[-1] < engine.history[poisoned_epoch - 1]["train_loss"]  # it keeps learning
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    assert_valid_stage_chains(sink.events)


def test_a_rollback_after_a_germination_keeps_the_seed_and_the_event_table(tmp_path: Path) -> None:
    """Regression: the rollback point was taken before the decision, so a seed germinated
    after it vanished on rollback with a GERMINATED->DORMANT event and no seed_pruned."""
    sink = MemorySink()
    engine = make_engine(fast_config(tmp_path, epochs=4), telemetry=Telemetry([sink]))
    engine.train_epoch()
    assert engine.apply(Action(LifecycleOp.GERMINATE, slot="r0c0", blueprint="conv_light")).applied
    _poison(engine, {1})
    engine.train_epoch()
    assert engine.governor.rollbacks == 1
    assert engine.model.slot("r0c0").stage == SeedStage.GERMINATED
    assert "r0c0" in engine.groups.seed_groups()
    assert_valid_stage_chains(sink.events)


@pytest.mark.slow
def test_consecutive_divergent_epochs_roll_back_each_time_and_the_run_still_ends(tmp_path: Path) -> None:
    sink = MemorySink()
    engine = make_engine(fast_config(tmp_path, epochs=7), telemetry=Telemetry([sink]))
    _poison(engine, {3, 4, 5})
    drive(engine, ScriptedPolicy(_blend_r0c1))  # used to oscillate forever after the second rollback

    rollbacks = [e for e in sink.events if isinstance(e, Rollback)]
    assert [r.epoch for r in rollbacks] == [3, 4, 5]
    assert [r.restored_epoch for r in rollbacks] == [3, 4, 5]  # each from the epoch just before
    epochs = [e.epoch for e in sink.events if e.EVENT == "epoch_end"]
    assert epochs == list(range(7))
    assert engine.epoch == 7 and engine.governor.rollbacks == 3
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())


@pytest.mark.slow  # ten compiled epochs with a recompile at every lifecycle event
def test_compile_survives_more_growth_events_than_the_recompile_limit(tmp_path: Path) -> None:
    torch._dynamo.reset()
    counters.clear()
    sink = MemorySink()
    config = fast_config(tmp_path, epochs=10, compile=True, compile_backend="eager", embargo_epochs=0)
    engine = make_engine(config, telemetry=Telemetry([sink]))
    # Hitting the limit would otherwise silently fall back to eager; make it an error.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        drive(engine, ScriptedPolicy(churn))
    torch._dynamo.reset()

    kinds = Counter(e.EVENT for e in sink.events)
    lifecycle = kinds["stage_changed"]
    assert lifecycle > torch._dynamo.config.recompile_limit
    assert kinds["seed_germinated"] >= 3 and kinds["seed_pruned"] >= 2
    assert counters["frames"]["ok"] > torch._dynamo.config.recompile_limit  # Dynamo kept compiling
    assert counters["stats"]["unique_graphs"] > torch._dynamo.config.recompile_limit
    assert all(math.isfinite(h["train_loss"]) for h in engine.history)
    assert_valid_stage_chains(sink.events)


def test_without_the_reset_the_same_run_hits_the_recompile_limit(tmp_path: Path, monkeypatch) -> None:
    """Control for the test above: it would catch an engine that forgot to reset Dynamo."""
    torch._dynamo.reset()
    config = fast_config(tmp_path, epochs=6, compile=True, compile_backend="eager", embargo_epochs=0)
    engine = make_engine(config)
    real_reset = torch._dynamo.reset
    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    try:
        with (
            torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=2),
            pytest.raises(FailOnRecompileLimitHit),
        ):
            drive(engine, ScriptedPolicy(churn))
    finally:
        real_reset()


def test_bf16_autocast_run_on_a_tiny_task(tmp_path: Path) -> None:
    config = fast_config(tmp_path, epochs=3, amp="bf16")
    engine = make_engine(config, task=tiny_task(n_train=64, n_val=32, batch_size=32))
    drive(engine, make_controller(config))
    assert engine.config.amp == "bf16" and engine.trainer.scaler.is_enabled() is False
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in engine.history)
    assert all(p.dtype == torch.float32 for p in engine.model.parameters())


def test_resolved_config_fills_in_the_task_defaults(tmp_path: Path) -> None:
    config = fast_config(tmp_path, epochs=None)
    task = tiny_task()
    resolved = resolve_config(config, make_engine(config, task), task)
    assert resolved.epochs == task.default_epochs
    assert resolved.lr == task.default_lr and resolved.batch_size == 32
    assert resolved.device == "cpu" and resolved.amp == "none"
    assert resolved.blueprints and "conv_light" in resolved.blueprints


def test_training_flops_are_counted_once_per_structure_and_grow_with_the_model(tmp_path: Path) -> None:
    task = tiny_task()
    engine = make_engine(fast_config(tmp_path, epochs=4), task)
    engine.train_epoch()
    first = engine.train_flops
    engine.train_epoch()
    assert first > 0 and engine.train_flops == pytest.approx(2 * first)  # same structure, same cost
    # A 3x3 conv's multiply-adds alone, forward and backward (~3x forward), for the first block:
    conv = engine.model.host.blocks[0][0]
    fwd = 2 * conv.weight.numel() * 8 * 8  # per example: 2 FLOPs per MAC over the 8x8 map
    assert first / task.n_train > 2 * fwd
    engine.apply(Action(LifecycleOp.GERMINATE, slot="r0c0", blueprint="conv_heavy"))
    engine.train_epoch()
    assert engine.train_flops == pytest.approx(3 * first)  # GERMINATED: the seed does not compute yet
    engine.apply(Action(LifecycleOp.ADVANCE, slot="r0c0"))  # TRAINING: the seed computes
    before = engine.train_flops
    engine.train_epoch()
    assert engine.train_flops - before > 1.2 * first

"""Typed events: every type round-trips through primitives and JSON; bad dicts fail clearly."""

from __future__ import annotations

import json
import math

import pytest

from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.events import (
    EVENT_TYPES,
    ActorRestarted,
    AlphaChanged,
    EpochEnd,
    Event,
    EventDecodeError,
    PPOUpdate,
    Reward,
    Rollback,
    RunFinished,
    RunStarted,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    SeedSnapshot,
    StageChanged,
    event_from_dict,
)
from esper.leyline.stages import SeedStage

EXAMPLES: list[Event] = [
    RunStarted(
        epoch=0,
        config={"epochs": 20, "lr": 0.1, "slots": ["r0c0", "r0c1"], "amp": None},
        task="digits",
        controller="heuristic",
        seed=7,
        device="cpu",
        host_params=12345,
    ),
    EpochEnd(
        epoch=3,
        train_loss=0.5,
        train_accuracy=0.81,
        val_loss=0.6,
        val_accuracy=0.79,
        total_params=13000,
        seed_params=655,
        lr=0.05,
        wall_time_s=1.25,
        seeds={
            "r0c1": SeedSnapshot(
                stage=SeedStage.BLENDING,
                alpha=0.4,
                blueprint="conv_small",
                contribution=0.01,
                params=655,
            ),
            "r0c2": SeedSnapshot(stage=SeedStage.TRAINING, alpha=0.0, blueprint="noop"),
        },
    ),
    SeedGerminated(
        epoch=2,
        slot="r0c1",
        blueprint="conv_small",
        seed_id="s1",
        params=655,
        alpha_algorithm=AlphaAlgorithm.GATE,
        alpha_curve=AlphaCurve.SIGMOID,
        tempo=5,
    ),
    StageChanged(
        epoch=3,
        slot="r0c1",
        seed_id="s1",
        from_stage=SeedStage.TRAINING,
        to_stage=SeedStage.BLENDING,
    ),
    AlphaChanged(epoch=4, slot="r0c1", seed_id="s1", alpha=0.2),
    SeedPruned(epoch=5, slot="r0c1", seed_id="s1", reason="negative contribution"),
    SeedFossilized(epoch=9, slot="r0c2", seed_id="s2", contribution=None),
    Rollback(epoch=6, reason="loss spike", restored_epoch=5, pruned_slot="r0c1"),
    RunFinished(epoch=20, summary={"final_val_accuracy": 0.9, "seeds_fossilized": 1}),
    PPOUpdate(epoch=0, round=3, metrics={"approx_kl": 0.01, "entropy": {"op": 1.2, "slot": 0.9}}),
    Reward(epoch=4, components={"accuracy_delta": 0.02, "param_rent": -0.001}),
    ActorRestarted(epoch=2, round=2, env=1, step=3, seed=1234, reason="actor died", attempt=1),
]


def test_examples_cover_every_event_type() -> None:
    assert {type(e) for e in EXAMPLES} == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.EVENT)
def test_round_trip_through_json(event: Event) -> None:
    data = event.to_dict()
    assert data["event"] == event.EVENT
    assert data["epoch"] == event.epoch
    # primitives only: JSON encodes it without help, and the rebuilt event is equal
    rebuilt = event_from_dict(json.loads(json.dumps(data)))
    assert rebuilt == event
    assert type(rebuilt) is type(event)


def test_enums_are_stored_by_name() -> None:
    data = EXAMPLES[1].to_dict()
    assert data["seeds"]["r0c1"]["stage"] == "BLENDING"
    germ = EXAMPLES[2].to_dict()
    assert (germ["alpha_algorithm"], germ["alpha_curve"]) == ("GATE", "SIGMOID")
    assert EXAMPLES[3].to_dict()["to_stage"] == "BLENDING"


def test_nan_loss_round_trips() -> None:
    event = AlphaChanged(epoch=1, slot="r0c0", seed_id="s", alpha=float("nan"))
    rebuilt = event_from_dict(json.loads(json.dumps(event.to_dict())))
    assert isinstance(rebuilt, AlphaChanged) and math.isnan(rebuilt.alpha)


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        EXAMPLES[4].epoch = 9  # type: ignore[misc]


def test_unknown_event_type_names_known_ones() -> None:
    with pytest.raises(EventDecodeError, match=r"unknown event type 'epoch_ends'.*epoch_end"):
        event_from_dict({"event": "epoch_ends", "epoch": 1})
    with pytest.raises(EventDecodeError, match="unknown event type None"):
        event_from_dict({"epoch": 1})


def test_missing_and_unknown_keys_are_errors() -> None:
    data = EXAMPLES[4].to_dict()
    del data["alpha"]
    with pytest.raises(EventDecodeError, match=r"missing keys \['alpha'\]"):
        event_from_dict(data)
    data = {**EXAMPLES[4].to_dict(), "colour": "red"}
    with pytest.raises(EventDecodeError, match=r"unknown keys \['colour'\]"):
        event_from_dict(data)


def test_bad_stage_name_is_an_error() -> None:
    data = EXAMPLES[3].to_dict() | {"to_stage": "BLENDED"}
    with pytest.raises(EventDecodeError, match=r"unknown SeedStage 'BLENDED'.*BLENDING"):
        event_from_dict(data)


def test_optional_fields_may_be_omitted() -> None:
    event = event_from_dict({"event": "seed_pruned", "epoch": 2, "slot": "r0c0", "seed_id": "a"})
    assert event == SeedPruned(epoch=2, slot="r0c0", seed_id="a", reason="")


def test_unserialisable_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot serialise object"):
        RunFinished(epoch=1, summary={"x": object()}).to_dict()

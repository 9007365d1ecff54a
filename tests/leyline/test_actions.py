"""The lifecycle action space: operations, heads, and the Action record."""

from __future__ import annotations

import dataclasses
import json

import pytest

from esper.leyline.actions import (
    ALPHA_TARGETS,
    BLEND_STYLES,
    HEADS,
    OP_HEADS,
    TEMPO_EPOCHS,
    WAIT,
    Action,
    LifecycleOp,
)
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve


def test_op_heads_cover_every_op_with_known_heads():
    assert set(OP_HEADS) == set(LifecycleOp)
    for op, heads in OP_HEADS.items():
        assert heads[0] == "op", op
        assert set(heads) <= set(HEADS), op
        assert len(set(heads)) == len(heads), op
        assert [h for h in HEADS if h in heads] == list(heads), f"{op}: heads out of HEADS order"
    assert OP_HEADS[LifecycleOp.WAIT] == ("op",)
    assert {"slot", "blueprint", "style", "tempo"} <= set(OP_HEADS[LifecycleOp.GERMINATE])
    assert "alpha_target" in OP_HEADS[LifecycleOp.SET_ALPHA_TARGET]
    for op in (LifecycleOp.ADVANCE, LifecycleOp.PRUNE, LifecycleOp.FOSSILIZE):
        assert "slot" in OP_HEADS[op]
    # Every head is used by some operation.
    assert set().union(*OP_HEADS.values()) == set(HEADS)


def test_head_tables():
    assert len(BLEND_STYLES) == len(AlphaCurve) * len(AlphaAlgorithm)
    assert set(BLEND_STYLES) == {(c, a) for c in AlphaCurve for a in AlphaAlgorithm}
    assert all(isinstance(t, int) and t >= 1 for t in TEMPO_EPOCHS)
    assert all(0.0 < t <= 1.0 for t in ALPHA_TARGETS) and 1.0 in ALPHA_TARGETS
    assert HEADS[0] == "op" and len(set(HEADS)) == len(HEADS)


def test_action_to_dict_is_primitives_with_enum_names():
    action = Action(
        LifecycleOp.GERMINATE,
        slot="r0c1",
        blueprint="conv_small",
        alpha_algorithm=AlphaAlgorithm.GATE,
        alpha_curve=AlphaCurve.SIGMOID,
        tempo_epochs=8,
        alpha_target=0.5,
    )
    data = action.to_dict()
    assert data == {
        "op": "GERMINATE",
        "slot": "r0c1",
        "blueprint": "conv_small",
        "alpha_algorithm": "GATE",
        "alpha_curve": "SIGMOID",
        "tempo_epochs": 8,
        "alpha_target": 0.5,
    }
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {f.name for f in dataclasses.fields(Action)}


def test_wait_and_defaults():
    assert WAIT.op == LifecycleOp.WAIT and WAIT.slot is None and WAIT.blueprint is None
    assert WAIT.to_dict()["op"] == "WAIT"
    assert (WAIT.alpha_algorithm, WAIT.alpha_curve, WAIT.tempo_epochs, WAIT.alpha_target) == (
        AlphaAlgorithm.ADD,
        AlphaCurve.LINEAR,
        5,
        1.0,
    )


def test_action_is_frozen_and_hashable():
    action = Action(LifecycleOp.PRUNE, slot="r0c0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        action.slot = "r0c1"  # type: ignore[misc]
    assert action == Action(LifecycleOp.PRUNE, slot="r0c0")
    assert len({action, Action(LifecycleOp.PRUNE, slot="r0c0")}) == 1

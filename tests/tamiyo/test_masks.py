"""Masks: the projection of the exact joint legality, agreement with apply_action, vector codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.errors import ShapeError
from esper.kasmina.host import CNNHost
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.actions import HEADS, Action, LifecycleOp
from esper.leyline.stages import SeedStage
from esper.tamiyo.masks import ActionLayout, JointLegality, action_mask
from esper.tolaria.lifecycle import apply_action, observe

BLUEPRINTS = ("noop", "norm", "conv_small")


def _model():
    import torch

    torch.manual_seed(0)
    host = CNNHost(num_classes=3, n_blocks=2, base_channels=4, in_channels=1, pool_layers=0)
    return MorphogeneticModel(host)


def _observe(model, max_seed_params=None):
    hist = [{"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}]
    return observe(
        model, epoch=0, max_epochs=5, history=hist, max_seed_params=max_seed_params, blueprints=BLUEPRINTS
    )


def _drive(model, script):
    """Put the slots in assorted stages with real lifecycle calls (forward/backward for G2)."""
    import torch

    x = torch.randn(2, 1, 8, 8)
    for op, slot_i, bp in script:
        obs = _observe(model)
        layout = ActionLayout.from_observation(obs)
        vec = np.array([op, slot_i % len(layout.slot_ids), bp % len(BLUEPRINTS), 0, 0, 0])
        apply_action(model, layout.decode(vec))
        model.zero_grad()
        model(x).sum().backward()
        for s in model.slots():
            s.record_contribution(0.05) if s.stage in (SeedStage.BLENDING, SeedStage.HOLDING) else None
            s.step_epoch()


@settings(max_examples=25, deadline=None)
@given(
    script=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 2)), max_size=10),
    budget=st.one_of(st.none(), st.integers(0, 400)),
)
def test_joint_table_is_exact_and_mask_is_its_projection(script, budget):
    model = _model()
    _drive(model, script)
    obs = _observe(model, budget)
    layout = ActionLayout.from_observation(obs)
    legal = JointLegality.from_observation(obs)
    mask = legal.flat_mask()
    assert mask.shape == (layout.mask_dim,) and mask.dtype == bool
    sizes = list(layout.head_sizes.values())
    heads = np.split(mask, np.cumsum(sizes)[:-1])
    state = model.state_dict()
    for op in LifecycleOp:
        for slot in range(len(layout.slot_ids)):
            for bp in range(len(BLUEPRINTS)) if op == LifecycleOp.GERMINATE else (0,):
                vec = np.array([op, slot, bp, 0, 0, 0])
                allowed = legal.allows(vec)
                if allowed:  # the per-head mask never forbids a legal action
                    used = {LifecycleOp.WAIT: 1, LifecycleOp.GERMINATE: 3}.get(op, 2)
                    assert all(heads[h][vec[h]] for h in range(used))
                if op == LifecycleOp.GERMINATE and obs.max_seed_params is not None:
                    continue  # the budget is the env's rule, not the model's
                probe = MorphogeneticModel(
                    CNNHost(num_classes=3, n_blocks=2, base_channels=4, in_channels=1, pool_layers=0)
                )
                probe.load_state_dict(state)
                outcome = apply_action(probe, layout.decode(vec))
                assert outcome.applied == allowed, (op.name, slot, obs.slots[slot].stage.name, outcome.reason)


def test_conditional_masks_only_allow_joint_legal_actions():
    model = _model()
    model.germinate_seed("norm", slot="r0c1")
    obs = _observe(model)
    legal = JointLegality.from_observation(obs)
    layout = ActionLayout.from_observation(obs)
    sizes = np.cumsum(list(layout.head_sizes.values()))[:-1]
    for op in np.flatnonzero(np.split(legal.flat_mask(), sizes)[0]):
        slots = np.flatnonzero(np.split(legal.conditional_mask(int(op)), sizes)[1])
        for s in slots:
            bps = np.flatnonzero(np.split(legal.conditional_mask(int(op), int(s)), sizes)[2])
            for b in bps:
                assert legal.allows(np.array([op, s, b, 0, 0, 0])), (op, s, b)


def test_head_nobody_reads_allows_index_zero_only():
    obs = _observe(_model())  # everything dormant: WAIT and GERMINATE only
    heads = np.split(
        action_mask(obs), np.cumsum(list(ActionLayout.from_observation(obs).head_sizes.values()))[:-1]
    )
    assert heads[0].tolist() == [True, True, False, False, False, False]
    assert heads[5].tolist() == [True, False, False, False]  # alpha_target: no SET_ALPHA_TARGET


def test_encode_decode_round_trip_and_bad_vectors():
    layout = ActionLayout(("r0c0", "r0c1"), BLUEPRINTS)
    action = Action(LifecycleOp.GERMINATE, slot="r0c1", blueprint="norm", tempo_epochs=8)
    assert layout.decode(layout.encode(action)) == action
    assert layout.decode(np.zeros(len(HEADS), dtype=np.int64)).op == LifecycleOp.WAIT
    with pytest.raises(ShapeError, match="one per head"):
        layout.check_vector([0, 0])
    with pytest.raises(ShapeError, match="out of range"):
        layout.check_vector([9, 0, 0, 0, 0, 0])
    with pytest.raises(ShapeError, match="integers"):
        layout.check_vector(np.array([0.5, 0, 0, 0, 0, 0]))

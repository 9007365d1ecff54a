"""Observation features: fixed size, finite, documented order."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from obs_kit import BLUEPRINTS, make_obs

from esper.leyline.stages import SeedStage
from esper.tamiyo.features import FEATURE_CLIP, feature_names, feature_size, observation_features


def test_size_dtype_and_names_agree():
    vec = observation_features(make_obs())
    assert vec.dtype == np.float32
    assert vec.shape == (feature_size(2, len(BLUEPRINTS)),)
    names = feature_names(["r0c0", "r0c1"], BLUEPRINTS)
    assert len(names) == vec.shape[0]
    named = dict(zip(names, vec.tolist(), strict=True))
    assert named["progress"] == np.float32(0.3)
    assert named["slot/r0c1/stage/TRAINING"] == 1.0 and named["slot/r0c0/stage/DORMANT"] == 1.0
    assert named["slot/r0c1/blueprint/norm"] == 1.0 and named["slot/r0c0/blueprint/norm"] == 0.0
    assert math.isclose(named["slot/r0c1/contribution"], 0.1, rel_tol=1e-6)
    assert named["slot/r0c1/gate_ready"] == 1.0
    assert math.isclose(named["val_acc_delta"], 0.2, rel_tol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    loss=st.floats(allow_nan=True, allow_infinity=True),
    acc=st.floats(allow_nan=True, allow_infinity=True),
    contribution=st.floats(allow_nan=True, allow_infinity=True),
    stages=st.lists(st.sampled_from(list(SeedStage)), min_size=1, max_size=4),
)
def test_always_finite_and_clipped(loss, acc, contribution, stages):
    vec = observation_features(make_obs(tuple(stages), loss, acc, contribution))
    assert vec.shape == (feature_size(len(stages), len(BLUEPRINTS)),)
    assert np.all(np.isfinite(vec)) and np.all(np.abs(vec) <= FEATURE_CLIP)


def test_the_budget_and_the_trend_are_observed():
    obs = make_obs(max_epochs=60, max_seed_params=40)
    named = dict(
        zip(feature_names(["r0c0", "r0c1"], BLUEPRINTS), observation_features(obs).tolist(), strict=True)
    )
    assert math.isclose(named["epochs_left"], (60 - 2 - 1) / 100, rel_tol=1e-6)  # epoch 2 of 60
    assert math.isclose(named["budget_left"], 1 - 10 / 40, rel_tol=1e-6)
    assert named["slot/r0c1/contribution_trend"] == 0.0  # fewer than two measurements
    import dataclasses

    slots = (obs.slots[0], dataclasses.replace(obs.slots[1], contribution_history=(0.05, 0.02, 0.07)))
    named = dict(
        zip(
            feature_names(["r0c0", "r0c1"], BLUEPRINTS),
            observation_features(dataclasses.replace(obs, slots=slots)).tolist(),
            strict=True,
        )
    )
    assert math.isclose(named["slot/r0c1/contribution_trend"], 0.05, rel_tol=1e-5)

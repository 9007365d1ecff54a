"""AlphaController and the alpha curves: property tests of the pinned contract."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.kasmina.alpha_controller import AlphaController, curve_progress
from esper.leyline.alpha import AlphaCurve, AlphaMode

UNIT = st.floats(0.0, 1.0, allow_nan=False)
CURVES = st.sampled_from(list(AlphaCurve))
STEEPNESS = st.one_of(
    st.sampled_from([1e-9, 1e-6, 0.5, 12.0, 1e3, 1e6]),
    st.floats(1e-9, 1e6, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(
    start=UNIT,
    target=UNIT,
    steps=st.integers(0, 60),
    curve=CURVES,
    steepness=STEEPNESS,
)
def test_ramp_is_monotone_bounded_and_snaps_on_the_last_tick(start, target, steps, curve, steepness):
    ctl = AlphaController(alpha=start)
    ctl.retarget(alpha_target=target, alpha_steps_total=steps, alpha_curve=curve, alpha_steepness=steepness)
    assert ctl.alpha_curve == curve and ctl.alpha_steepness == steepness
    if steps == 0 or target == start:
        assert ctl.alpha == target
        assert ctl.alpha_mode == AlphaMode.HOLD
        assert ctl.at_target
        assert ctl.step() is False
        assert ctl.alpha == target
        return
    assert ctl.alpha_mode == (AlphaMode.UP if target > start else AlphaMode.DOWN)
    lo, hi = min(start, target), max(start, target)
    previous = ctl.alpha
    assert previous == start
    for tick in range(1, steps + 1):
        reached = ctl.step()
        assert math.isfinite(ctl.alpha)
        assert lo <= ctl.alpha <= hi
        if target > start:
            assert ctl.alpha >= previous
        else:
            assert ctl.alpha <= previous
        assert reached is (tick == steps)
        if tick < steps:
            assert ctl.alpha_mode != AlphaMode.HOLD
            assert not ctl.at_target
        previous = ctl.alpha
    assert ctl.alpha == target  # exactly, not approximately
    assert ctl.alpha_mode == AlphaMode.HOLD
    assert ctl.at_target
    assert ctl.step() is False
    assert ctl.alpha == target


@settings(max_examples=100, deadline=None)
@given(
    start=UNIT,
    target=UNIT,
    steps=st.integers(1, 30),
    ticks=st.integers(0, 40),
    curve=CURVES,
    steepness=STEEPNESS,
)
def test_to_dict_from_dict_round_trips_exactly_mid_ramp(start, target, steps, ticks, curve, steepness):
    ctl = AlphaController(alpha=start)
    ctl.retarget(alpha_target=target, alpha_steps_total=steps, alpha_curve=curve, alpha_steepness=steepness)
    for _ in range(ticks):
        ctl.step()
    data = ctl.to_dict()
    assert all(type(v) in (int, float) for v in data.values()), data  # primitives only
    copy = AlphaController.from_dict(data)
    assert copy == ctl
    assert copy.to_dict() == data
    for _ in range(steps + 1):  # the copy continues exactly as the original
        assert copy.step() == ctl.step()
        assert copy.alpha == ctl.alpha
        assert copy.to_dict() == ctl.to_dict()


def test_from_dict_rejects_missing_and_unknown_keys():
    data = AlphaController().to_dict()
    with pytest.raises(ValueError, match="keys"):
        AlphaController.from_dict({k: v for k, v in data.items() if k != "alpha"})
    with pytest.raises(ValueError, match="keys"):
        AlphaController.from_dict({**data, "extra": 1})


@settings(max_examples=100, deadline=None)
@given(
    start=UNIT,
    target=UNIT,
    steps=st.integers(2, 20),
    ticks=st.integers(1, 19),
    new_target=st.floats(allow_nan=False),
)
def test_retarget_outside_hold_raises_and_changes_nothing(start, target, steps, ticks, new_target):
    ctl = AlphaController(alpha=start)
    ctl.retarget(alpha_target=target, alpha_steps_total=steps)
    for _ in range(min(ticks, steps - 1)):
        ctl.step()
    if ctl.alpha_mode == AlphaMode.HOLD:  # target == start: nothing in progress
        return
    before = ctl.to_dict()
    with pytest.raises(ValueError, match="only allowed from HOLD"):  # ported code matches these words
        ctl.retarget(alpha_target=new_target, alpha_steps_total=3)
    assert ctl.to_dict() == before


def test_zero_steps_snaps_at_once():
    ctl = AlphaController(alpha=0.2)
    ctl.retarget(alpha_target=0.9, alpha_steps_total=0)
    assert ctl.alpha == 0.9 and ctl.alpha_mode == AlphaMode.HOLD and ctl.alpha_steps_total == 0
    assert ctl.step() is False and ctl.alpha == 0.9


@settings(max_examples=300, deadline=None)
@given(curve=CURVES, t1=UNIT, t2=UNIT, steepness=STEEPNESS)
def test_curves_are_finite_monotone_and_pass_through_the_ends(curve, t1, t2, steepness):
    a, b = curve_progress(curve, t1, steepness), curve_progress(curve, t2, steepness)
    assert math.isfinite(a) and math.isfinite(b)
    assert 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0
    if t1 <= t2:
        assert a <= b
    else:
        assert a >= b
    assert curve_progress(curve, 0.0, steepness) == 0.0
    assert curve_progress(curve, 1.0, steepness) == 1.0


@pytest.mark.parametrize("steepness", [1e-300, 1e-9, 1e6, 1e300, 1.7e308])
@pytest.mark.parametrize("curve", list(AlphaCurve))
def test_extreme_steepness_never_overflows(curve, steepness):
    ctl = AlphaController(alpha=0.0)
    ctl.retarget(alpha_target=1.0, alpha_steps_total=7, alpha_curve=curve, alpha_steepness=steepness)
    values = [ctl.alpha]
    while not ctl.step():
        values.append(ctl.alpha)
    values.append(ctl.alpha)
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values) and values[-1] == 1.0
    for t in (0.0, 1e-12, 0.25, 0.5, 0.75, 1.0 - 1e-12, 1.0):
        p = curve_progress(curve, t, steepness)
        assert math.isfinite(p) and 0.0 <= p <= 1.0


def test_cosine_has_zero_slope_at_both_ends():
    h = 1e-6
    start_slope = (curve_progress(AlphaCurve.COSINE, h) - curve_progress(AlphaCurve.COSINE, 0.0)) / h
    end_slope = (curve_progress(AlphaCurve.COSINE, 1.0) - curve_progress(AlphaCurve.COSINE, 1.0 - h)) / h
    assert abs(start_slope) < 1e-4 and abs(end_slope) < 1e-4
    # ... while in the middle it is steeper than the line (pi / 2).
    mid = (curve_progress(AlphaCurve.COSINE, 0.5 + h) - curve_progress(AlphaCurve.COSINE, 0.5 - h)) / (2 * h)
    assert mid == pytest.approx(math.pi / 2, rel=1e-6)
    # Closed form: (1 - cos(pi t)) / 2.
    for t in (0.1, 0.3, 0.5, 0.9):
        assert curve_progress(AlphaCurve.COSINE, t) == pytest.approx((1 - math.cos(math.pi * t)) / 2)


def test_linear_and_sigmoid_closed_forms():
    for t in (0.0, 0.2, 0.5, 0.7, 1.0):
        assert curve_progress(AlphaCurve.LINEAR, t) == t
    k = 12.0
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    for t in (0.1, 0.5, 0.8):
        expected = (sig(k * (t - 0.5)) - sig(-k / 2)) / (sig(k / 2) - sig(-k / 2))
        assert curve_progress(AlphaCurve.SIGMOID, t, k) == pytest.approx(expected, rel=1e-12)
    # A tiny steepness tends to the line, a huge one to a step at t = 1/2.
    assert curve_progress(AlphaCurve.SIGMOID, 0.3, 1e-9) == pytest.approx(0.3, abs=1e-6)
    assert curve_progress(AlphaCurve.SIGMOID, 0.49, 1e6) == 0.0
    assert curve_progress(AlphaCurve.SIGMOID, 0.51, 1e6) == 1.0


def test_controller_ramp_follows_the_curve():
    ctl = AlphaController(alpha=0.2)
    ctl.retarget(alpha_target=0.6, alpha_steps_total=4, alpha_curve=AlphaCurve.COSINE)
    seen = []
    while not ctl.step():
        seen.append(ctl.alpha)
    expected = [0.2 + 0.4 * curve_progress(AlphaCurve.COSINE, i / 4) for i in (1, 2, 3)]
    assert seen == pytest.approx(expected, abs=1e-15)
    assert ctl.alpha == 0.6


def test_values_are_clamped_on_construction():
    ctl = AlphaController(alpha=1.5, alpha_start=-2.0, alpha_target=float("inf"))
    assert (ctl.alpha, ctl.alpha_start, ctl.alpha_target) == (1.0, 0.0, 1.0)
    assert AlphaController(alpha=float("-inf")).alpha == 0.0
    ctl = AlphaController(alpha=0.0)
    ctl.retarget(alpha_target=7.0, alpha_steps_total=2)
    assert ctl.alpha_target == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": float("nan")},
        {"alpha_start": float("nan")},
        {"alpha_target": float("nan")},
        {"alpha": "half"},
        {"alpha_steepness": 0.0},
        {"alpha_steepness": -1.0},
        {"alpha_steepness": float("inf")},
        {"alpha_steepness": float("nan")},
        {"alpha_steps_total": -1},
        {"alpha_steps_total": 2.5},
        {"alpha_steps_total": True},
        {"alpha_steps_done": -3},
        {"alpha_mode": 7},
        {"alpha_curve": 0},
    ],
)
def test_bad_construction_values_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        AlphaController(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha_target": float("nan"), "alpha_steps_total": 3},
        {"alpha_target": 0.5, "alpha_steps_total": -1},
        {"alpha_target": 0.5, "alpha_steps_total": 1.5},
        {"alpha_target": 0.5, "alpha_steps_total": 3, "alpha_steepness": 0.0},
        {"alpha_target": 0.5, "alpha_steps_total": 3, "alpha_curve": 9},
    ],
)
def test_bad_retarget_raises_and_changes_nothing(kwargs):
    ctl = AlphaController(alpha=0.25)
    before = ctl.to_dict()
    with pytest.raises(ValueError):
        ctl.retarget(**kwargs)
    assert ctl.to_dict() == before


def test_hold_at_stops_a_ramp():
    ctl = AlphaController(alpha=0.0)
    ctl.retarget(alpha_target=1.0, alpha_steps_total=10)
    ctl.step()
    ctl.hold_at(0.4)
    assert ctl.alpha == ctl.alpha_target == ctl.alpha_start == 0.4
    assert ctl.alpha_mode == AlphaMode.HOLD and ctl.at_target
    with pytest.raises(ValueError):
        ctl.hold_at(float("nan"))
    assert ctl.alpha == 0.4

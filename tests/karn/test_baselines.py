"""Static-matched interpolation and FLOPs-to-accuracy, against values computed by hand."""

from __future__ import annotations

import pytest

from esper.karn.baselines import StaticPoint, bracket, flops_to_reach, interpolate_accuracy, mean_curve

CURVE = [StaticPoint(152, 0.766), StaticPoint(277, 0.925), StaticPoint(438, 0.959), StaticPoint(868, 0.97)]


def test_interpolation_between_the_brackets_by_hand() -> None:
    low, high = bracket(342, CURVE)
    assert (low.params, high.params) == (277, 438)
    # 0.925 + (342 - 277) / (438 - 277) * (0.959 - 0.925) = 0.925 + 65/161 * 0.034
    assert interpolate_accuracy(342, low, high) == pytest.approx(0.925 + 65 / 161 * 0.034, abs=1e-12)
    assert interpolate_accuracy(342, low, high) == pytest.approx(0.93872670807, abs=1e-9)


def test_a_size_on_the_curve_is_its_own_bracket() -> None:
    low, high = bracket(438, CURVE)
    assert low == high == StaticPoint(438, 0.959)
    assert interpolate_accuracy(438, low, high) == 0.959
    assert interpolate_accuracy(277, CURVE[1], CURVE[2]) == 0.925  # the ends are exact
    assert interpolate_accuracy(438, CURVE[1], CURVE[2]) == 0.959


@pytest.mark.parametrize("size", [100, 900])
def test_no_extrapolation_outside_the_static_range(size: int) -> None:
    with pytest.raises(ValueError, match=r"outside the static widths' range 152\.\.868"):
        bracket(size, CURVE)
    with pytest.raises(ValueError, match="no static points"):
        bracket(size, [])
    with pytest.raises(ValueError, match="not between"):
        interpolate_accuracy(size, CURVE[1], CURVE[2])


def test_flops_to_reach_is_the_first_epoch_at_or_above_the_target() -> None:
    acc = [0.5, 0.8, 0.7, 0.9, 0.95]
    flops = [10.0, 20.0, 30.0, 45.0, 60.0]
    assert flops_to_reach(acc, flops, 0.8) == 20.0  # reached exactly
    assert flops_to_reach(acc, flops, 0.85) == 45.0  # the dip at epoch 2 does not count
    assert flops_to_reach(acc, flops, 0.99) is None


def test_mean_curve_averages_per_epoch_and_cuts_to_the_shortest_run() -> None:
    acc, flops = mean_curve([[0.2, 0.4, 0.6], [0.4, 0.6]], [[1.0, 2.0, 3.0], [3.0, 6.0]])
    assert acc == pytest.approx([0.3, 0.5]) and flops == pytest.approx([2.0, 4.0])
    assert mean_curve([], []) == ([], [])

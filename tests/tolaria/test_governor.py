"""Governor: non-finite losses and spikes beyond a multiple of the recent median are divergence."""

from __future__ import annotations

import math

import pytest

from esper.tolaria.governor import CEILING_MARGIN, Governor, loss_ceiling


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_is_divergence_even_without_history(loss: float) -> None:
    verdict = Governor().verdict(loss)
    assert verdict is not None and verdict.startswith("non-finite loss")


def test_a_spike_beyond_the_factor_times_the_median_is_divergence() -> None:
    gov = Governor(spike_factor=3.0, window=5)
    for loss in (1.0, 2.0, 1.0):  # median 1.0
        assert gov.verdict(loss) is None
        gov.accept(loss)
    assert gov.verdict(3.0) is None  # exactly 3 x median is still fine
    verdict = gov.verdict(3.01)
    assert verdict is not None and "loss spike" in verdict and "median 1" in verdict


def test_spikes_are_only_judged_after_min_history() -> None:
    gov = Governor(spike_factor=2.0, min_history=2)
    gov.accept(1.0)
    assert gov.verdict(100.0) is None
    gov.accept(1.0)
    assert gov.verdict(100.0) is not None


def test_the_median_uses_only_the_last_window_losses() -> None:
    gov = Governor(spike_factor=2.0, window=3)
    for loss in (10.0, 10.0, 10.0, 1.0, 1.0, 1.0):
        gov.accept(loss)
    assert gov.losses == [1.0, 1.0, 1.0]
    assert gov.verdict(2.5) is not None


def test_a_bad_loss_is_not_recorded_by_verdict() -> None:
    gov = Governor()
    gov.accept(1.0)
    gov.verdict(math.nan)
    assert gov.losses == [1.0]


def test_state_dict_round_trip() -> None:
    gov = Governor(spike_factor=2.0, window=3)
    for loss in (1.0, 1.5, 1.2):
        gov.accept(loss)
    gov.rollbacks = 2
    other = Governor(spike_factor=2.0, window=3)
    other.load_state_dict(gov.state_dict())
    assert other.losses == gov.losses and other.rollbacks == 2
    assert other.verdict(2.5) == gov.verdict(2.5)


def test_near_convergence_noise_is_not_a_spike_but_a_real_jump_is() -> None:
    gov = Governor(spike_factor=3.0, spike_margin=0.1, window=5)
    for loss in (0.010, 0.012, 0.011):
        gov.accept(loss)
    assert gov.verdict(0.05) is None  # 4.5x the median, yet only 0.04 above it
    assert gov.verdict(0.2) is not None


def test_a_loss_above_the_ceiling_is_divergence_even_without_history() -> None:
    assert loss_ceiling(10) == pytest.approx(math.log(10) + CEILING_MARGIN)
    gov = Governor(ceiling=loss_ceiling(10))
    assert gov.verdict(2.0) is None
    verdict = gov.verdict(5313.0)
    assert verdict is not None and "above the ceiling" in verdict and "5313" in verdict
    assert Governor().ceiling is None and Governor().verdict(5313.0) is None  # only relative spikes


def test_the_ceiling_survives_a_state_dict_round_trip() -> None:
    gov = Governor(ceiling=3.0)
    gov.accept(1.0)
    other = Governor(ceiling=3.0)
    other.load_state_dict(gov.state_dict())
    assert other.verdict(3.5) is not None and other.losses == [1.0]


@pytest.mark.slow
def test_lr_100_on_digits_rolls_back_and_says_why(tmp_path) -> None:
    from esper.nissa.telemetry import MemorySink
    from esper.recipes.train import run_training
    from esper.tamiyo.factory import make_controller
    from esper.tolaria.config import RunConfig

    config = RunConfig(task="digits", epochs=2, lr=100.0, quiet=True, out=str(tmp_path / "run"))
    sink = MemorySink()
    summary = run_training(config, make_controller(config), extra_sinks=[sink])
    rollbacks = [e for e in sink.events if e.EVENT == "rollback"]
    assert summary["rollbacks"] >= 1 and rollbacks
    assert "above the ceiling" in rollbacks[0].reason

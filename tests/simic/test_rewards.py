"""Rewards against closed forms; potential-based shaping telescopes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.errors import ConfigError
from esper.leyline.stages import SeedStage
from esper.simic.rewards import (
    RewardConfig,
    basic_reward,
    lifecycle_potential,
    shaped_reward,
    sparse_reward,
)

finite = st.floats(-1, 1, allow_nan=False)


@given(
    a0=finite,
    a1=finite,
    cs=st.lists(finite, max_size=3),
    p0=finite,
    p1=finite,
    ratio=st.floats(0, 5),
    illegal=st.booleans(),
)
def test_shaped_closed_form(a0, a1, cs, p0, p1, ratio, illegal):
    cfg = RewardConfig()
    r = shaped_reward(cfg, acc_before=a0, acc_after=a1, blended_contributions=cs, potential_before=p0,
                      potential_after=p1, param_ratio=ratio, terminal=False, illegal=illegal)  # fmt: skip
    expected = (cfg.accuracy_weight * (a1 - a0) + cfg.contribution_weight * sum(cs)
                + cfg.shaping_weight * (cfg.gamma * p1 - p0) - cfg.rent_coef * ratio
                - (cfg.illegal_penalty if illegal else 0.0))  # fmt: skip
    assert math.isclose(r["total"], expected, abs_tol=1e-9)
    assert math.isclose(r["total"], sum(v for k, v in r.items() if k != "total"), abs_tol=1e-12)


@settings(max_examples=50)
@given(phis=st.lists(st.floats(0, 5), min_size=2, max_size=12), gamma=st.floats(0.5, 1.0))
def test_shaping_telescopes_over_an_episode(phis, gamma):
    cfg = RewardConfig(gamma=gamma, accuracy_weight=0, contribution_weight=0, rent_coef=0, shaping_weight=1)
    total = 0.0
    for t in range(len(phis) - 1):
        r = shaped_reward(
            cfg,
            acc_before=0,
            acc_after=0,
            blended_contributions=(),
            potential_before=phis[t],
            potential_after=phis[t + 1],
            param_ratio=0,
            terminal=t == len(phis) - 2,
        )
        total += gamma**t * r["shaping"]
    assert math.isclose(total, -phis[0], abs_tol=1e-9)  # phi(terminal) = 0


def test_sparse_and_basic():
    cfg = RewardConfig(mode="sparse")
    assert sparse_reward(cfg, final_accuracy=0.9, param_ratio=2.0, terminal=False)["total"] == 0.0
    r = sparse_reward(cfg, final_accuracy=0.9, param_ratio=2.0, terminal=True)
    assert math.isclose(r["total"], cfg.accuracy_weight * 0.9 - cfg.rent_coef * 2.0)
    b = basic_reward(RewardConfig(mode="basic"), contributions=[0.1, 0.2], param_ratio=1.0, illegal=True)
    assert math.isclose(b["total"], 2.0 * 0.3 - 0.05 - 0.1)


def test_potential_and_config_errors():
    assert lifecycle_potential([SeedStage.DORMANT, SeedStage.HOLDING, SeedStage.PRUNED]) == 1.0
    with pytest.raises(ConfigError, match="mode"):
        RewardConfig(mode="dense")


def test_lifecycle_reward_pays_for_kept_seeds_and_charges_the_growth():
    from esper.simic.rewards import lifecycle_reward

    cfg = RewardConfig(mode="lifecycle", accuracy_weight=10.0, contribution_weight=2.0, fossil_weight=4.0,
                       rent_coef=0.5, illegal_penalty=0.1)  # fmt: skip
    r = lifecycle_reward(
        cfg, acc_before=0.5, acc_after=0.6, blended_contributions=[0.02],
        fossilized_contributions=[0.05, 0.01], growth=0.8, terminal=False,
    )  # fmt: skip
    assert r["accuracy_delta"] == pytest.approx(1.0)  # 10 * 0.1
    assert r["contribution"] == pytest.approx(0.04) and r["fossil"] == pytest.approx(0.24)  # 4 * 0.06
    assert r["rent"] == pytest.approx(-0.4) and r["final"] == 0.0
    assert r["total"] == pytest.approx(1.0 + 0.04 + 0.24 - 0.4)
    last = lifecycle_reward(cfg, acc_before=0.6, acc_after=0.6, blended_contributions=[],
                            fossilized_contributions=[], growth=0.0, terminal=True, illegal=True)  # fmt: skip
    assert last["final"] == pytest.approx(6.0) and last["illegal"] == -0.1
    # Fossilizing a seed pays more per step than keeping the same contribution blended.
    held = lifecycle_reward(cfg, acc_before=0.6, acc_after=0.6, blended_contributions=[0.05],
                            fossilized_contributions=[], growth=0.0, terminal=False)  # fmt: skip
    kept = lifecycle_reward(cfg, acc_before=0.6, acc_after=0.6, blended_contributions=[],
                            fossilized_contributions=[0.05], growth=0.0, terminal=False)  # fmt: skip
    assert kept["total"] > held["total"]

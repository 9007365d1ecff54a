"""GAE against advantages computed by hand, and the value diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from esper.simic.gae import compute_gae, explained_variance, normalize_advantages

# A 4-step toy rollout of one environment, gamma = lambda = 0.5 (so gamma * lambda = 0.25).
# dones[2] = 1: s_2 starts a new episode, i.e. step 1 ended the first one.
REWARDS = [1.0, 2.0, 3.0, 4.0]
VALUES = [0.5, 1.0, 1.5, 2.0]
DONES = [0.0, 0.0, 1.0, 0.0]
LAST_VALUE = 3.0
GAMMA = LAM = 0.5


def _col(xs: list[float]) -> torch.Tensor:
    return torch.tensor(xs).unsqueeze(1)  # (T, 1)


def _gae(last_done: float = 0.0, **kw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_gae(
        _col(REWARDS), _col(VALUES), _col(DONES), torch.tensor([LAST_VALUE]),
        torch.tensor([last_done]), GAMMA, LAM, **kw,
    )  # fmt: skip


def test_gae_by_hand_with_episode_boundary() -> None:
    # deltas: t0 = 1 + .5*1.0 - .5 = 1.0; t1 = 2 + 0 (episode ends) - 1 = 1.0;
    #         t2 = 3 + .5*2.0 - 1.5 = 2.5; t3 = 4 + .5*3.0 (bootstrap last_value) - 2 = 3.5
    # advantages: A3 = 3.5; A2 = 2.5 + .25*3.5 = 3.375; A1 = 1.0 (boundary); A0 = 1 + .25*1
    adv, ret = _gae()
    torch.testing.assert_close(adv, _col([1.25, 1.0, 3.375, 3.5]))
    torch.testing.assert_close(ret, _col([1.75, 2.0, 4.875, 5.5]))


def test_gae_last_done_stops_bootstrap() -> None:
    # Step 3 ends an episode: delta3 = 4 - 2 = 2; A2 = 2.5 + .25*2 = 3.0.
    adv, _ = _gae(last_done=1.0)
    torch.testing.assert_close(adv, _col([1.25, 1.0, 3.0, 2.0]))


def test_gae_truncation_bootstraps_final_value() -> None:
    # Step 1 was cut by a time limit; its final observation is worth 4.0:
    # delta1 = 2 + .5*4 - 1 = 3.0 -> A1 = 3.0, A0 = 1 + .25*3 = 1.75; later steps unchanged.
    truncated = _col([0.0, 1.0, 0.0, 0.0])
    truncated_values = _col([9.0, 4.0, 9.0, 9.0])  # ignored where not truncated
    adv, ret = _gae(truncated=truncated, truncated_values=truncated_values)
    torch.testing.assert_close(adv, _col([1.75, 3.0, 3.375, 3.5]))
    torch.testing.assert_close(ret, adv + _col(VALUES))


def test_gae_truncation_needs_both_tensors() -> None:
    with pytest.raises(ValueError, match="together"):
        _gae(truncated=_col([0.0, 1.0, 0.0, 0.0]))


def test_gae_envs_are_independent() -> None:
    # A second env without any boundary must not change the first one's advantages.
    rewards = torch.tensor([REWARDS, [0.0, 0.0, 0.0, 1.0]]).T
    values = torch.tensor([VALUES, [0.0, 0.0, 0.0, 0.0]]).T
    dones = torch.tensor([DONES, [0.0, 0.0, 0.0, 0.0]]).T
    adv, _ = compute_gae(rewards, values, dones, torch.tensor([LAST_VALUE, 0.0]), torch.zeros(2), GAMMA, LAM)
    torch.testing.assert_close(adv[:, :1], _gae()[0])
    # Second env: only the last reward, discounted by gamma*lambda per step back.
    torch.testing.assert_close(adv[:, 1], torch.tensor([0.25**3, 0.25**2, 0.25, 1.0]))


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_lambda_one_is_discounted_return(gamma: float) -> None:
    # With lambda = 1 the return is the discounted reward-to-go plus the bootstrap.
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.rand(5, 3, generator=g), torch.rand(5, 3, generator=g)
    last_value = torch.rand(3, generator=g)
    _, ret = compute_gae(rewards, values, torch.zeros(5, 3), last_value, torch.zeros(3), gamma, 1.0)
    expected = torch.stack(
        [sum(gamma ** (k - t) * rewards[k] for k in range(t, 5)) + gamma ** (5 - t) * last_value
         for t in range(5)]
    )  # fmt: skip
    torch.testing.assert_close(ret, expected)


def test_lambda_zero_is_td_error() -> None:
    adv, _ = compute_gae(
        _col(REWARDS), _col(VALUES), _col(DONES), torch.tensor([LAST_VALUE]), torch.zeros(1),
        GAMMA, 0.0,
    )  # fmt: skip
    torch.testing.assert_close(adv, _col([1.0, 1.0, 2.5, 3.5]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_fp32_advantages(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    dones = (torch.rand(16, 4, generator=g) < 0.2).float()
    last_value, last_done = torch.randn(4, generator=g), torch.zeros(4)
    low = [x.to(dtype) for x in (rewards, values, dones, last_value, last_done)]
    adv, ret = compute_gae(*low, 0.99, 0.95)
    assert adv.dtype == ret.dtype == torch.float32
    # Exactly the fp32 computation on the (upcast) low-precision numbers...
    ref_adv, _ = compute_gae(*(x.float() for x in low), 0.99, 0.95)
    torch.testing.assert_close(adv, ref_adv, rtol=0, atol=0)
    # ...and within input rounding of the fp32 originals.
    full_adv, _ = compute_gae(rewards, values, dones, last_value, last_done, 0.99, 0.95)
    torch.testing.assert_close(adv, full_adv, rtol=0.02, atol=0.05)


def test_gae_under_autocast_is_fp32() -> None:
    args = (_col(REWARDS), _col(VALUES), _col(DONES), torch.tensor([LAST_VALUE]), torch.zeros(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adv, _ = compute_gae(*args, GAMMA, LAM)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, _gae()[0], rtol=0, atol=0)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        compute_gae(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(2),
                    torch.zeros(2), 0.9, 0.9)  # fmt: skip


def test_normalize_advantages() -> None:
    adv = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.bfloat16)
    out = normalize_advantages(adv)
    assert out.dtype == torch.float32
    # population std of 1..4 is sqrt(1.25)
    torch.testing.assert_close(out, (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25))
    torch.testing.assert_close(normalize_advantages(torch.tensor([5.0])), torch.tensor([0.0]))


def test_explained_variance() -> None:
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, 2.5), y) == pytest.approx(0.0)
    # reversed: residuals (-3, -1, 1, 3) have 4x Var[y] -> 1 - 4 = -3, worse than the mean
    assert explained_variance(y.flip(0), y) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(y, torch.ones(4)))

"""PPO: config validation, loss closed forms, precision under autocast, learning, resume."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from esper.errors import ConfigError
from esper.leyline.actions import HEADS, LifecycleOp
from esper.simic.buffer import RolloutBuffer
from esper.simic.gae import compute_gae
from esper.simic.ppo import PPOConfig, PPOTrainer, linear_schedule, ppo_losses
from esper.tamiyo.policy_net import FactoredPolicy

HEAD_SIZES = {"op": 6, "slot": 3, "blueprint": 4, "style": 9, "tempo": 3, "alpha_target": 4}
OBS_DIM, T, N = 4, 4, 16
SLOT = HEADS.index("slot")


def _bandit_reward(actions: torch.Tensor) -> torch.Tensor:
    """1 for GERMINATE into slot 2, else 0."""
    return ((actions[:, 0] == LifecycleOp.GERMINATE) & (actions[:, SLOT] == 2)).float()


def _rollout(trainer: PPOTrainer, *, seed: int = 0, episode_len: int = 1) -> RolloutBuffer:
    """A bandit rollout: constant-ish observations, an episode every ``episode_len`` steps."""
    policy, cfg = trainer.policy, trainer.config
    torch.manual_seed(seed)  # sampling
    g = torch.Generator().manual_seed(seed)
    buffer = RolloutBuffer(T, N, OBS_DIM, len(HEADS), policy.mask_dim)
    buffer.reset()
    for t in range(T):
        obs = torch.ones(N, OBS_DIM) + 0.1 * torch.randn(N, OBS_DIM, generator=g)
        masks = torch.ones(N, policy.mask_dim, dtype=torch.bool)
        with trainer.autocast():
            actions, log_prob, value, _ = policy.act(obs, masks)
        starts = torch.full((N,), float(t % episode_len == 0))
        buffer.add(obs, actions, masks, log_prob, value, _bandit_reward(actions), starts)
    last_done = torch.full((N,), float(T % episode_len == 0))
    with trainer.autocast():
        _, _, last_value, _ = policy.act(torch.ones(N, OBS_DIM))
    buffer.compute_returns_and_advantages(last_value, last_done, cfg.gamma, cfg.gae_lambda)
    return buffer


def _trainer(amp: str = "none", seed: int = 0, **cfg: object) -> PPOTrainer:
    torch.manual_seed(seed)
    policy = FactoredPolicy(OBS_DIM, HEAD_SIZES, hidden=16)
    config = PPOConfig(**{"amp_dtype": amp, "minibatch_size": 16, **cfg})  # type: ignore[arg-type]
    return PPOTrainer(policy, config)


# ---- config -----------------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    assert PPOConfig().clip_coef == 0.2


def test_config_reports_every_bad_value() -> None:
    with pytest.raises(ConfigError) as info:
        PPOConfig(lr=-1.0, gamma=1.5, ppo_epochs=0, amp_dtype="fp8", target_kl=0.0)  # type: ignore[arg-type]
    message = str(info.value)
    for name in ("lr=-1.0", "gamma=1.5", "ppo_epochs=0", "amp_dtype='fp8'", "target_kl=0.0"):
        assert name in message


def test_config_entropy_schedule_needs_both_fields() -> None:
    with pytest.raises(ConfigError, match="ent_anneal_updates"):
        PPOConfig(ent_coef_final=0.0)
    with pytest.raises(ConfigError, match="minibatch_size='8'"):
        PPOConfig(minibatch_size="8")  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PPOConfig().lr = 1.0  # type: ignore[misc]


def test_linear_schedule() -> None:
    assert linear_schedule(0.1, 0.0, 0, 10) == 0.1
    assert linear_schedule(0.1, 0.0, 5, 10) == pytest.approx(0.05)
    assert linear_schedule(0.1, 0.0, 50, 10) == 0.0


def test_entropy_coefficient_anneals_over_updates() -> None:
    trainer = _trainer(ent_coef=0.02, ent_coef_final=0.0, ent_anneal_updates=2)
    seen = [trainer.update(_rollout(trainer, seed=i))["ent_coef"] for i in range(3)]
    assert seen == pytest.approx([0.02, 0.01, 0.0])


# ---- losses (closed forms) --------------------------------------------------------------


def test_ppo_losses_closed_form() -> None:
    old = torch.zeros(3)
    new = torch.log(torch.tensor([1.0, 1.5, 0.5]))
    adv = torch.tensor([1.0, 1.0, -1.0])
    # ratios 1, 1.5, 0.5; clip 0.2: per-sample max(-A r, -A clip(r)) = -1, -1.2, +0.8
    losses = ppo_losses(new, old, adv, torch.zeros(3), torch.zeros(3), torch.zeros(3), 0.2, False)
    torch.testing.assert_close(losses.policy_loss, torch.tensor((-1.0 - 1.2 + 0.8) / 3))
    torch.testing.assert_close(losses.clipfrac, torch.tensor(2 / 3))
    kl = ((1.5 - 1 - math.log(1.5)) + (0.5 - 1 - math.log(0.5))) / 3
    torch.testing.assert_close(losses.approx_kl, torch.tensor(kl))


def test_value_loss_clipping_closed_form() -> None:
    new_v, old_v, ret = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    args = (torch.zeros(1), torch.zeros(1), torch.zeros(1), new_v, old_v, ret, 0.2)
    # unclipped: 0.5 * (1 - 2)^2 = 0.5; clipped value 0.2: 0.5 * max(1, 1.8^2) = 1.62
    torch.testing.assert_close(ppo_losses(*args, False).value_loss, torch.tensor(0.5))
    torch.testing.assert_close(ppo_losses(*args, True).value_loss, torch.tensor(1.62))


def test_ppo_losses_upcast_low_precision() -> None:
    lp = torch.zeros(4, dtype=torch.bfloat16)
    losses = ppo_losses(lp, lp.float(), torch.ones(4), lp, lp, lp, 0.2, True)
    assert losses.ratio.dtype == losses.policy_loss.dtype == torch.float32
    assert torch.equal(losses.ratio, torch.ones(4))


# ---- precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_update_matches_fp32_advantages_and_starts_at_ratio_one(amp: str) -> None:
    ref_trainer, low_trainer = _trainer(), _trainer(amp)
    ref, low = _rollout(ref_trainer, episode_len=2), _rollout(low_trainer, episode_len=2)
    assert torch.equal(ref.actions, low.actions)  # same weights and sampling seed
    assert low.values.dtype == low.advantages.dtype == torch.float32
    # GAE of the stored values is the fp32 computation, even inside autocast...
    with low_trainer.autocast():
        low.compute_returns_and_advantages(
            torch.zeros(N), torch.ones(N), PPOConfig.gamma, PPOConfig.gae_lambda
        )
    expected, _ = compute_gae(
        low.rewards, low.values, low.episode_starts, torch.zeros(N), torch.ones(N),
        PPOConfig.gamma, PPOConfig.gae_lambda,
    )  # fmt: skip
    torch.testing.assert_close(low.advantages, expected, rtol=0, atol=0)
    # ...and matches the fp32 rollout's up to the critic's low-precision rounding.
    torch.testing.assert_close(low.advantages, ref.advantages, rtol=0.05, atol=0.02)
    ref.compute_returns_and_advantages(torch.zeros(N), torch.ones(N), 0.99, 0.95)
    ref_metrics, low_metrics = ref_trainer.update(ref), low_trainer.update(low)
    assert ref_metrics["ratio_start_dev"] < 1e-5
    assert low_metrics["ratio_start_dev"] < 1e-3  # rollout and update agree under autocast
    assert all(math.isfinite(v) for k, v in low_metrics.items() if k != "explained_variance")


# ---- learning, early stop, resume --------------------------------------------------------


def test_ppo_learns_the_best_action_of_a_bandit() -> None:
    trainer = _trainer(lr=0.01, ent_coef=0.0, gamma=0.0, ppo_epochs=4, minibatch_size=32)
    mean_rewards = []
    for i in range(15):  # ~6 updates are enough for every seed tried
        buffer = _rollout(trainer, seed=i)
        mean_rewards.append(buffer.rewards.mean().item())
        metrics = trainer.update(buffer)
    assert mean_rewards[0] < 0.2 and mean_rewards[-1] > 0.9  # chance level is 1/18
    greedy, _, _, _ = trainer.policy.act(torch.ones(8, OBS_DIM), deterministic=True)
    assert (greedy[:, 0] == LifecycleOp.GERMINATE).all() and (greedy[:, SLOT] == 2).all()
    assert metrics["entropy/slot"] < math.log(3)
    expected_keys = {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm",
                     "explained_variance", "ent_coef"} | {f"entropy/{h}" for h in HEADS}  # fmt: skip
    assert expected_keys <= metrics.keys()


def test_target_kl_stops_after_first_epoch() -> None:
    trainer = _trainer(lr=0.05, target_kl=1e-9, ppo_epochs=5)
    assert trainer.update(_rollout(trainer))["epochs"] == 1.0


def test_update_needs_advantages() -> None:
    trainer = _trainer()
    buffer = RolloutBuffer(T, N, OBS_DIM, len(HEADS), trainer.policy.mask_dim)
    with pytest.raises(RuntimeError, match="compute_returns_and_advantages"):
        trainer.update(buffer)


@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_state_dict_resumes_exactly(amp: str) -> None:
    trainer = _trainer(amp)
    trainer.update(_rollout(trainer, seed=0))
    blob = io.BytesIO()
    torch.save(trainer.state_dict(), blob)
    blob.seek(0)
    restored = _trainer(amp, seed=123)  # different initial weights
    restored.load_state_dict(torch.load(blob, weights_only=True))
    assert restored.updates == 1
    buffer = _rollout(trainer, seed=1)
    assert trainer.update(buffer) == restored.update(buffer)
    for a, b in zip(trainer.policy.parameters(), restored.policy.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_lstm_update_replays_rollout_sequences(amp: str) -> None:
    torch.manual_seed(0)
    policy = FactoredPolicy(OBS_DIM, HEAD_SIZES, hidden=16, lstm=True, lstm_hidden=8)
    trainer = PPOTrainer(policy, PPOConfig(amp_dtype=amp, minibatch_size=2 * T))  # type: ignore[arg-type]
    buffer = RolloutBuffer(T, N, OBS_DIM, len(HEADS), policy.mask_dim, lstm_hidden=8)
    state = policy.initial_state(N)
    _, _, _, state = policy.act(torch.randn(N, OBS_DIM), state=state)  # a non-zero start state
    buffer.reset(state)
    starts = torch.zeros(N)
    for _ in range(T):
        obs = torch.randn(N, OBS_DIM)
        with trainer.autocast():
            actions, log_prob, value, state = policy.act(obs, None, state, episode_starts=starts)
        masks = torch.ones(N, policy.mask_dim, dtype=torch.bool)
        buffer.add(obs, actions, masks, log_prob, value, _bandit_reward(actions), starts)
        starts = (torch.rand(N) < 0.3).float()  # some episodes end mid-rollout
    buffer.compute_returns_and_advantages(torch.zeros(N), starts, 0.99, 0.95)
    metrics = trainer.update(buffer)
    assert metrics["ratio_start_dev"] < 1e-4  # evaluate saw the same states as the rollout
    assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["grad_norm"])

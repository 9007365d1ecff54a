"""Clipped-objective PPO (CleanRL's recipe) for a :class:`FactoredPolicy`.

One :meth:`PPOTrainer.update` takes a rollout whose advantages are computed and runs
``ppo_epochs`` shuffled passes of minibatch steps over it. The policy's forward may run under
``torch.autocast`` (``amp_dtype``), but GAE (in the buffer), the probability ratio and every
loss are fp32: the policy returns fp32 log-probs and values, and :func:`ppo_losses` upcasts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from esper.errors import ConfigError
from esper.simic.buffer import RolloutBatch, RolloutBuffer
from esper.simic.gae import explained_variance, normalize_advantages
from esper.tamiyo.policy_net import FactoredPolicy

__all__ = ["PPOConfig", "PPOLosses", "PPOTrainer", "linear_schedule", "ppo_losses"]

AmpDtype = Literal["none", "bf16", "fp16"]
_AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _unit(v: Any) -> bool:
    return 0 <= v <= 1


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


_CHECKS: dict[str, tuple[Any, str]] = {
    "lr": (_positive, "> 0"),
    "gamma": (_unit, "in [0, 1]"),
    "gae_lambda": (_unit, "in [0, 1]"),
    "clip_coef": (_positive, "> 0"),
    "clip_vloss": (lambda v: isinstance(v, bool), "a bool"),
    "vf_coef": (_non_negative, ">= 0"),
    "ent_coef": (_non_negative, ">= 0"),
    "ent_coef_final": (lambda v: v is None or v >= 0, "None or >= 0"),
    "ent_anneal_updates": (lambda v: _positive_int(v) or v == 0, "an int >= 0"),
    "max_grad_norm": (_positive, "> 0"),
    "ppo_epochs": (_positive_int, "an int >= 1"),
    "minibatch_size": (_positive_int, "an int >= 1"),
    "target_kl": (lambda v: v is None or v > 0, "None or > 0"),
    "normalize_advantages": (lambda v: isinstance(v, bool), "a bool"),
    "amp_dtype": (lambda v: v in ("none", *_AMP_DTYPES), "one of 'none', 'bf16', 'fp16'"),
    "adam_eps": (_positive, "> 0"),
}


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters; every bad value is reported at once as a :class:`ConfigError`.

    Attributes:
        lr: Adam learning rate.
        gamma: discount factor.
        gae_lambda: GAE lambda.
        clip_coef: ratio clip range ``[1 - c, 1 + c]`` (and the value clip when enabled).
        clip_vloss: clip the value update around the rollout's values, as CleanRL does.
        vf_coef: value-loss weight.
        ent_coef: entropy bonus weight (at the first update, when annealed).
        ent_coef_final: entropy weight reached after ``ent_anneal_updates`` updates (linear);
            None keeps ``ent_coef`` constant.
        ent_anneal_updates: length of the entropy schedule in updates (needs
            ``ent_coef_final``).
        max_grad_norm: global gradient-norm clip.
        ppo_epochs: passes over the rollout per update.
        minibatch_size: transitions per minibatch.
        target_kl: stop the update after an epoch whose mean approximate KL exceeds this.
        normalize_advantages: standardise advantages per minibatch.
        amp_dtype: autocast dtype for the policy's forward ("fp16" also uses a GradScaler).
        adam_eps: Adam epsilon (1e-5, CleanRL's choice, rather than torch's 1e-8).
    """

    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    ent_coef_final: float | None = None
    ent_anneal_updates: int = 0
    max_grad_norm: float = 0.5
    ppo_epochs: int = 4
    minibatch_size: int = 64
    target_kl: float | None = None
    normalize_advantages: bool = True
    amp_dtype: AmpDtype = "none"
    adam_eps: float = 1e-5

    def __post_init__(self) -> None:
        errors = []
        for f in fields(self):
            check, expected = _CHECKS[f.name]
            value = getattr(self, f.name)
            try:
                ok = bool(check(value))
            except TypeError:
                ok = False
            if not ok:
                errors.append(f"{f.name}={value!r} (expected {expected})")
        if (self.ent_coef_final is None) != (self.ent_anneal_updates == 0):
            errors.append(
                f"ent_coef_final={self.ent_coef_final!r} with ent_anneal_updates="
                f"{self.ent_anneal_updates!r} (set both to anneal the entropy weight, or neither)"
            )
        if errors:
            raise ConfigError("invalid PPOConfig: " + "; ".join(errors))


def linear_schedule(start: float, end: float, step: int, total: int) -> float:
    """``start`` moving linearly to ``end`` over ``total`` steps, then held at ``end``."""
    return start + (end - start) * min(step / total, 1.0)


class PPOLosses(NamedTuple):
    """Scalar fp32 losses and diagnostics of one minibatch (``ratio`` is per sample)."""

    policy_loss: Tensor
    value_loss: Tensor
    ratio: Tensor
    approx_kl: Tensor
    clipfrac: Tensor


def ppo_losses(
    new_log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    clip_coef: float,
    clip_vloss: bool,
) -> PPOLosses:
    """The clipped surrogate and (optionally clipped) value loss, all in fp32.

    ``approx_kl`` is the ``(r - 1) - log r`` estimator of KL(old || new) (Schulman's k3).
    """
    logratio = new_log_probs.float() - old_log_probs.float()
    ratio = logratio.exp()
    adv = advantages.float()
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    policy_loss = torch.max(-adv * ratio, -adv * clipped).mean()

    new_v, old_v, ret = new_values.float(), old_values.float(), returns.float()
    value_loss = (new_v - ret).square()
    if clip_vloss:
        v_clipped = old_v + (new_v - old_v).clamp(-clip_coef, clip_coef)
        value_loss = torch.max(value_loss, (v_clipped - ret).square())
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return PPOLosses(policy_loss, 0.5 * value_loss.mean(), ratio, approx_kl, clipfrac)


class PPOTrainer:
    """Owns the optimizer (and GradScaler) that trains a policy with PPO.

    Args:
        policy: the actor-critic to train.
        config: hyper-parameters.
        generator: CPU generator for minibatch shuffles (default: seeded with 0).
    """

    def __init__(
        self,
        policy: FactoredPolicy,
        config: PPOConfig,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        self.policy, self.config = policy, config
        self.device_type = next(policy.parameters()).device.type
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=config.adam_eps)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=config.amp_dtype == "fp16")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.updates = 0

    def autocast(self) -> AbstractContextManager[Any]:
        """The autocast context of ``amp_dtype`` (a no-op for "none"); use it for rollouts too."""
        dtype = _AMP_DTYPES.get(self.config.amp_dtype)
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)

    def ent_coef(self) -> float:
        """Entropy weight for the next update."""
        cfg = self.config
        if cfg.ent_coef_final is None:
            return cfg.ent_coef
        total = cfg.ent_anneal_updates
        return linear_schedule(cfg.ent_coef, cfg.ent_coef_final, self.updates, total)

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """Run the PPO epochs over a rollout with computed advantages.

        Returns:
            Means over the minibatch steps of ``policy_loss``, ``value_loss``, ``entropy``,
            ``entropy/<head>``, ``approx_kl``, ``clipfrac``, ``grad_norm``; plus
            ``explained_variance`` of the rollout's values, ``ent_coef``, ``epochs`` run, and
            ``ratio_start_dev``: max ``|ratio - 1|`` of the first minibatch, before any step —
            ~0 unless rollout and update disagree (masks, LSTM state, precision).
        """
        ent_coef, cfg = self.ent_coef(), self.config
        sums: dict[str, Tensor] = {}  # kept on the device, read back once at the end
        steps, epochs, ratio_start_dev = 0, 0, float("nan")
        for _ in range(cfg.ppo_epochs):
            epochs += 1
            epoch_kl = []
            for batch in buffer.minibatches(cfg.minibatch_size, self.generator):
                stats, ratio_dev = self._step(batch, ent_coef)
                if steps == 0:
                    ratio_start_dev = ratio_dev.item()
                for key, value in stats.items():
                    sums[key] = sums[key] + value if key in sums else value
                epoch_kl.append(stats["approx_kl"])
                steps += 1
            if cfg.target_kl is not None and torch.stack(epoch_kl).mean().item() > cfg.target_kl:
                break
        self.updates += 1
        means = (torch.stack(list(sums.values())) / steps).tolist()  # the one host sync
        metrics = dict(zip(sums, means, strict=True))
        metrics["explained_variance"] = explained_variance(buffer.values, buffer.returns)
        metrics.update(ent_coef=ent_coef, epochs=float(epochs), ratio_start_dev=ratio_start_dev)
        return metrics

    def _step(self, batch: RolloutBatch, ent_coef: float) -> tuple[dict[str, Tensor], Tensor]:
        """One gradient step on a minibatch; returns detached stats and max ``|ratio - 1|``."""
        cfg = self.config
        with self.autocast():
            log_prob, entropy, value, head_entropy = self.policy.evaluate(
                batch.obs, batch.actions, batch.masks, batch.lstm_state, batch.episode_starts
            )
        advantages = batch.advantages
        if cfg.normalize_advantages and advantages.numel() > 1:
            advantages = normalize_advantages(advantages)
        losses = ppo_losses(
            log_prob, batch.old_log_probs, advantages, value, batch.old_values, batch.returns,
            cfg.clip_coef, cfg.clip_vloss,
        )  # fmt: skip
        mean_entropy = entropy.mean()
        loss = losses.policy_loss - ent_coef * mean_entropy + cfg.vf_coef * losses.value_loss

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

        stats = {
            "policy_loss": losses.policy_loss.detach(),
            "value_loss": losses.value_loss.detach(),
            "entropy": mean_entropy.detach(),
            "approx_kl": losses.approx_kl,
            "clipfrac": losses.clipfrac,
            "grad_norm": grad_norm.detach(),
        }
        for name, ent in head_entropy.items():
            stats[f"entropy/{name}"] = ent.detach().mean()
        return stats, (losses.ratio.detach() - 1.0).abs().max()

    def state_dict(self) -> dict[str, Any]:
        """Policy, optimizer, scaler, shuffle generator and update count (tensors/primitives)."""
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (into a trainer built with the same config)."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])

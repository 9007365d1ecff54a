"""Reward functions for the morphogenesis environment: pure functions over floats.

Each mode returns a dict of named components plus ``"total"`` (their sum), so every step's
reward can be audited (the environment puts the dict in ``info["reward_components"]`` and in
a ``Reward`` event). Accuracies are fractions in [0, 1]; ``param_ratio`` is seed parameters
divided by host parameters.

* ``shaped``: ``accuracy_delta = w_acc * (acc_t - acc_{t-1})``
  + ``contribution = w_contrib * sum(contributions of BLENDING/HOLDING seeds)``
  + ``shaping = w_shape * (gamma * phi(s_{t+1}) - phi(s_t))`` (potential-based, Ng et al. 1999;
  ``phi`` = :func:`lifecycle_potential`; ``phi(terminal) = 0``, so the shaping of an episode
  telescopes to ``-w_shape * phi(s_0)`` and cannot change which policy is optimal)
  - ``rent = rent_coef * param_ratio``.
* ``sparse``: ``0`` until the last step, then ``w_acc * final_accuracy - rent_coef *
  param_ratio``.
* ``basic``: ``w_contrib * sum(contributions of seeds with a measured contribution) - rent``.
* ``lifecycle``: pays for what a grown model *keeps*: ``accuracy_delta`` as ``shaped``, plus
  ``contribution = w_contrib * sum(BLENDING/HOLDING contributions)``, plus ``fossil = w_fossil
  * sum(contributions FOSSILIZED seeds had when fossilized)`` on every later step (so
  fossilizing a contributor early beats holding it in BLENDING, as ``w_fossil > w_contrib``),
  minus ``rent = rent_coef * growth`` where ``growth`` is the model's parameters over the
  starting host's minus 1 (width growth turns seed parameters into host ones: the rent follows
  the model, not the seeds), plus ``final = w_acc * final_accuracy`` on the last step.

Every mode adds ``illegal = -illegal_penalty`` on a step whose action was illegal (a no-op).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from esper.errors import ConfigError
from esper.leyline.stages import SeedStage

__all__ = [
    "REWARD_MODES",
    "STAGE_POTENTIAL",
    "RewardConfig",
    "basic_reward",
    "lifecycle_potential",
    "lifecycle_reward",
    "shaped_reward",
    "sparse_reward",
]

REWARD_MODES: tuple[str, ...] = ("shaped", "sparse", "basic", "lifecycle")

STAGE_POTENTIAL: Mapping[SeedStage, float] = {
    SeedStage.GERMINATED: 0.25,
    SeedStage.TRAINING: 0.5,
    SeedStage.BLENDING: 0.75,
    SeedStage.HOLDING: 1.0,
    SeedStage.FOSSILIZED: 1.5,
}
"""Potential of a slot in each stage (0 for those not listed: empty or failed)."""


@dataclass(frozen=True)
class RewardConfig:
    """Reward mode and weights.

    Attributes:
        mode: one of ``REWARD_MODES``.
        accuracy_weight: ``w_acc``, per unit of accuracy (fraction).
        contribution_weight: ``w_contrib``, per unit of counterfactual contribution.
        shaping_weight: ``w_shape`` on the potential difference.
        rent_coef: cost per unit of ``param_ratio`` (per step for shaped/basic, once for sparse;
            per unit of model growth for lifecycle).
        fossil_weight: ``w_fossil``, per unit of a fossilized seed's contribution, every step.
        illegal_penalty: subtracted on an illegal (no-op) action.
        gamma: discount used by the potential-based shaping (match PPO's ``gamma``).
    """

    mode: str = "shaped"
    accuracy_weight: float = 10.0
    contribution_weight: float = 2.0
    shaping_weight: float = 0.2
    rent_coef: float = 0.05
    fossil_weight: float = 4.0
    illegal_penalty: float = 0.1
    gamma: float = 0.99

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in REWARD_MODES:
            problems.append(f"mode={self.mode!r} is not one of {list(REWARD_MODES)}")
        for name in (
            "accuracy_weight",
            "contribution_weight",
            "shaping_weight",
            "rent_coef",
            "fossil_weight",
            "illegal_penalty",
        ):
            if not getattr(self, name) >= 0:
                problems.append(f"{name}={getattr(self, name)!r} must be >= 0")
        if not 0 <= self.gamma <= 1:
            problems.append(f"gamma={self.gamma!r} must be in [0, 1]")
        if problems:
            raise ConfigError("invalid RewardConfig: " + "; ".join(problems))


def lifecycle_potential(stages: Iterable[SeedStage]) -> float:
    """``phi(s)``: the sum of :data:`STAGE_POTENTIAL` over the slots' stages."""
    return float(sum(STAGE_POTENTIAL.get(SeedStage(s), 0.0) for s in stages))


def _finish(components: dict[str, float], illegal: bool, cfg: RewardConfig) -> dict[str, float]:
    components["illegal"] = -cfg.illegal_penalty if illegal else 0.0
    components["total"] = float(sum(components.values()))
    return components


def shaped_reward(
    cfg: RewardConfig,
    *,
    acc_before: float,
    acc_after: float,
    blended_contributions: Iterable[float],
    potential_before: float,
    potential_after: float,
    param_ratio: float,
    terminal: bool,
    illegal: bool = False,
) -> dict[str, float]:
    """The ``shaped`` reward of one step (``potential_after`` is taken as 0 when ``terminal``)."""
    phi_next = 0.0 if terminal else potential_after
    return _finish(
        {
            "accuracy_delta": cfg.accuracy_weight * (acc_after - acc_before),
            "contribution": cfg.contribution_weight * float(sum(blended_contributions)),
            "shaping": cfg.shaping_weight * (cfg.gamma * phi_next - potential_before),
            "rent": -cfg.rent_coef * param_ratio,
        },
        illegal,
        cfg,
    )


def sparse_reward(
    cfg: RewardConfig, *, final_accuracy: float, param_ratio: float, terminal: bool, illegal: bool = False
) -> dict[str, float]:
    """The ``sparse`` reward: terminal accuracy minus rent, 0 before the last step."""
    return _finish(
        {
            "accuracy": cfg.accuracy_weight * final_accuracy if terminal else 0.0,
            "rent": -cfg.rent_coef * param_ratio if terminal else 0.0,
        },
        illegal,
        cfg,
    )


def basic_reward(
    cfg: RewardConfig, *, contributions: Iterable[float], param_ratio: float, illegal: bool = False
) -> dict[str, float]:
    """The ``basic`` reward: summed counterfactual contributions minus rent."""
    return _finish(
        {
            "contribution": cfg.contribution_weight * float(sum(contributions)),
            "rent": -cfg.rent_coef * param_ratio,
        },
        illegal,
        cfg,
    )


def lifecycle_reward(
    cfg: RewardConfig,
    *,
    acc_before: float,
    acc_after: float,
    blended_contributions: Iterable[float],
    fossilized_contributions: Iterable[float],
    growth: float,
    terminal: bool,
    illegal: bool = False,
) -> dict[str, float]:
    """The ``lifecycle`` reward of one step (see the module docstring)."""
    return _finish(
        {
            "accuracy_delta": cfg.accuracy_weight * (acc_after - acc_before),
            "contribution": cfg.contribution_weight * float(sum(blended_contributions)),
            "fossil": cfg.fossil_weight * float(sum(fossilized_contributions)),
            "rent": -cfg.rent_coef * growth,
            "final": cfg.accuracy_weight * acc_after if terminal else 0.0,
        },
        illegal,
        cfg,
    )

"""Flatten events into slash-namespaced scalars (``val_accuracy``, ``seed/r0c1/alpha``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from esper.leyline.events import EpochEnd, PPOUpdate, Reward

__all__ = ["Scalar", "epoch_scalars", "flatten", "ppo_scalars", "reward_scalars"]

Scalar: TypeAlias = float | int | str | None

_EPOCH_FIELDS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "total_params",
    "seed_params",
    "lr",
    "wall_time_s",
)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Join nested mapping keys with ``/`` (``{"entropy": {"op": 1.0}}`` -> ``entropy/op``)."""
    out: dict[str, Scalar] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}/"))
        else:
            out[name] = value
    return out


def epoch_scalars(event: EpochEnd) -> dict[str, Scalar]:
    """One row of epoch metrics: the headline numbers, then ``seed/<slot>/<field>`` per slot."""
    out: dict[str, Scalar] = {name: getattr(event, name) for name in _EPOCH_FIELDS}
    for slot, snap in sorted(event.seeds.items()):
        prefix = f"seed/{slot}/"
        out[prefix + "stage"] = snap.stage.name
        out[prefix + "blueprint"] = snap.blueprint
        out[prefix + "alpha"] = snap.alpha
        out[prefix + "contribution"] = snap.contribution
        out[prefix + "params"] = snap.params
    return out


def ppo_scalars(event: PPOUpdate) -> dict[str, Scalar]:
    """PPO diagnostics under ``ppo/`` (``ppo/approx_kl``, ``ppo/entropy/op``)."""
    return flatten(event.metrics, prefix="ppo/")


def reward_scalars(event: Reward) -> dict[str, Scalar]:
    """Reward parts under ``reward/``."""
    return flatten(event.components, prefix="reward/")

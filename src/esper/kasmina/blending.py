"""Learned per-sample gating for the GATE blend algorithm, and the catalog of blend modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["BlendCatalog", "GatedBlend"]

_TOPOLOGIES = ("cnn", "transformer")


class GatedBlend(nn.Module):
    """A small gate network: pooled features -> per-sample gate in [0, 1].

    The gate starts at 0.5 for every sample (zero-initialised output layer) and learns which
    samples the seed should serve. Its parameters train with the seed's.

    Args:
        channels: feature channels ``C``.
        topology: ``"cnn"`` (features ``(B, C, H, W)``) or ``"transformer"`` (``(B, T, C)``).
        total_steps: nominal blend length, used by :meth:`get_alpha` for a step-based ramp.
    """

    def __init__(self, channels: int, topology: str = "cnn", total_steps: int = 10) -> None:
        super().__init__()
        if topology not in _TOPOLOGIES:
            raise ValueError(f"topology must be one of {_TOPOLOGIES}, got {topology!r}")
        if channels < 1 or total_steps < 1:
            raise ValueError(
                f"channels and total_steps must be >= 1, got {channels!r} and {total_steps!r}"
            )
        self.topology = topology
        self.total_steps = total_steps
        hidden = _hidden(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @staticmethod
    def param_count(channels: int) -> int:
        """Parameters of a gate for ``channels`` features (what GATE adds to a seed's cost)."""
        hidden = _hidden(channels)
        return channels * hidden + hidden + hidden + 1

    def get_alpha_for_blend(self, x: Tensor) -> Tensor:
        """Per-sample gate: ``(B, 1, 1, 1)`` for cnn features, ``(B, 1, 1)`` for transformer."""
        pooled = x.mean(dim=(2, 3)) if self.topology == "cnn" else x.mean(dim=1)  # (B, C)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))  # (B, 1)
        return gate.view(-1, 1, 1, 1) if self.topology == "cnn" else gate.view(-1, 1, 1)

    def get_alpha(self, step: int) -> float:
        """Nominal schedule value at ``step``: ``min(step / total_steps, 1)``."""
        return min(max(step, 0) / self.total_steps, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`get_alpha_for_blend`."""
        return self.get_alpha_for_blend(x)


class BlendCatalog:
    """Registry of blend modules by name (``create("gated", channels=64)``)."""

    _factories: ClassVar[dict[str, Callable[..., nn.Module]]] = {"gated": GatedBlend}

    @classmethod
    def list_algorithms(cls) -> list[str]:
        """Names accepted by :meth:`create`."""
        return sorted(cls._factories)

    @classmethod
    def create(cls, name: str, **kwargs: Any) -> nn.Module:
        """Build the named blend module; an unknown name lists the known ones."""
        try:
            factory = cls._factories[name]
        except KeyError:
            raise ValueError(
                f"unknown blend algorithm {name!r}; known: {cls.list_algorithms()}"
            ) from None
        return factory(**kwargs)


def _hidden(channels: int) -> int:
    return max(channels // 4, 4)

"""Gradient isolation: seeds learn behind the host without changing its forward pass."""

from __future__ import annotations

from torch import Tensor

from esper.kasmina.blend_ops import Alpha, blend_add

__all__ = ["blend_with_isolation", "ste_forward"]


def ste_forward(host: Tensor, seed: Tensor) -> Tensor:
    """Straight-through incubator: ``host + (seed - seed.detach())``.

    The forward value equals ``host`` exactly for finite seed outputs (``s - s == 0``); the
    backward passes the host's output gradient straight to the seed, as if it were added. The
    result has the host's dtype (the seed is converted only when it differs).
    """
    if seed.dtype != host.dtype:
        seed = seed.to(host.dtype)
    return host + (seed - seed.detach())


def blend_with_isolation(host: Tensor, seed: Tensor, alpha: Alpha) -> Tensor:
    """Blend an isolated seed into the host: the same op as :func:`blend_add`."""
    return blend_add(host, seed, alpha)

"""Gradient statistics for an incubating seed, gathered without host syncs during backward.

Post-accumulate-grad hooks (which work under ``torch.compile``, unlike module backward hooks)
count on the device how many finite gradients each parameter received; the counts are read
once per epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GradientMonitor"]


class GradientMonitor:
    """Counts backwards and finite gradients for a set of parameters."""

    def __init__(self) -> None:
        self._hooks: list[Any] = []
        self._finite: Tensor | None = None  # (P,) finite gradients per parameter, on the device
        self._events = 0  # backwards seen (counted on the first parameter)

    def attach(self, params: list[nn.Parameter]) -> None:
        """Start counting for ``params`` (replacing any earlier set)."""
        self.detach()
        if not params:
            return
        self._finite = torch.zeros(len(params), device=params[0].device)
        for i, p in enumerate(params):
            self._hooks.append(p.register_post_accumulate_grad_hook(self._hook(i)))

    def _hook(self, index: int) -> Any:
        def hook(param: Tensor) -> None:
            if param.grad is None or self._finite is None:
                return
            self._finite[index] += torch.isfinite(param.grad).all()
            if index == 0:
                self._events += 1

        return hook

    def pending(self) -> tuple[int, int]:
        """Backwards since the last :meth:`reset`, and how many gave every parameter a finite
        gradient (a lower bound). Reads the device counts: one host sync."""
        if self._events == 0 or self._finite is None:
            return 0, 0
        return self._events, int(self._finite.min().item())

    def reset(self) -> None:
        """Zero the counts (after they were folded into the slot's metrics)."""
        self._events = 0
        if self._finite is not None:
            self._finite.zero_()

    def detach(self) -> None:
        """Remove the hooks and forget the counts."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._finite = None
        self._events = 0

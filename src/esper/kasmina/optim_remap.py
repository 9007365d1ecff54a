"""Carry optimizer state across a structural change that replaced parameters by larger ones."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from esper.kasmina.width import ParamRemap

__all__ = ["carry_optimizer_state"]


def carry_optimizer_state(optimizer: torch.optim.Optimizer, remaps: Iterable[ParamRemap]) -> int:
    """Swap each remapped parameter in ``optimizer`` for its replacement, keeping its state.

    Per-parameter state tensors shaped like the old parameter (AdamW's ``exp_avg`` and
    ``exp_avg_sq``, SGD's ``momentum_buffer``) grow with it: the old values keep their exact
    state and the new rows start at zero. Other state (``step``) is kept as is. Remaps whose old
    parameter the optimizer does not hold are skipped, so one list can go to every optimizer.

    Returns:
        how many parameters were swapped.
    """
    slots = {id(p): (group, i) for group in optimizer.param_groups for i, p in enumerate(group["params"])}
    swapped = 0
    for remap in remaps:
        where = slots.pop(id(remap.old), None)
        if where is None:
            continue
        group, i = where
        group["params"][i] = remap.new
        slots[id(remap.new)] = where
        state = optimizer.state.pop(remap.old, None)
        if state is not None:
            optimizer.state[remap.new] = {key: _grow(value, remap) for key, value in state.items()}
        swapped += 1
    return swapped


def _grow(value: object, remap: ParamRemap) -> object:
    """A state tensor shaped like the old parameter, grown like it with zeros; else unchanged."""
    if not isinstance(value, Tensor) or value.shape != remap.old.shape:
        return value
    grown = torch.zeros(remap.new.shape, dtype=value.dtype, device=value.device)
    grown.narrow(remap.dim, 0, value.shape[remap.dim]).copy_(value)
    return grown

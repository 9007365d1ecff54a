"""Optimizers: one for the host, one per seed, so seeds join and leave without touching the host's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from esper.kasmina.model import MorphogeneticModel
from esper.kasmina.optim_remap import carry_optimizer_state

__all__ = ["OptimizerSet"]


class OptimizerSet:
    """AdamW for the host and for each slot's seed (a fossilized seed keeps training).

    Args:
        model: the morphogenetic model.
        lr: learning rate for host and seeds.
        weight_decay: AdamW weight decay.
    """

    def __init__(self, model: MorphogeneticModel, lr: float, weight_decay: float) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.host = self._adamw(model.get_host_parameters())
        self.seeds: dict[str, torch.optim.Optimizer] = {}
        self.params: list[nn.Parameter] = []
        """Every parameter of every optimizer (for gradient clipping), refreshed by :meth:`sync`."""
        self.sync(model)

    def _adamw(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        # foreach: one fused kernel per group instead of a Python loop over tensors (the CPU
        # default is the loop, which dominates the step for small seeds).
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, foreach=True)

    def sync(self, model: MorphogeneticModel) -> None:
        """Match the seed optimizers to the slots: add new seeds, drop pruned ones.

        Parameters that width growth replaced (a fossilized width seed's host layers, its
        neighbours' seeds) are swapped in place with their state grown (new rows at zero
        moments). An optimizer whose parameters are still the slot's parameters is kept as is.
        """
        remaps = model.take_param_remaps()
        for opt in self.all():
            carry_optimizer_state(opt, remaps)
        for slot in model.slots():
            params = list(slot.seed_parameters())
            current = self.seeds.get(slot.slot_id)
            if not params:
                self.seeds.pop(slot.slot_id, None)
            elif current is None or _params_of(current) != [id(p) for p in params]:
                self.seeds[slot.slot_id] = self._adamw(params)
        self.params = [p for opt in self.all() for g in opt.param_groups for p in g["params"]]

    def all(self) -> Iterator[torch.optim.Optimizer]:
        yield self.host
        yield from self.seeds.values()

    def zero_grad(self) -> None:
        for opt in self.all():
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "host": self.host.state_dict(),
            "seeds": {sid: opt.state_dict() for sid, opt in self.seeds.items()},
        }

    def load_state_dict(self, state: dict[str, Any], model: MorphogeneticModel) -> None:
        """Rebuild seed optimizers for the model's current seeds, then load every state."""
        self.seeds.clear()
        self.sync(model)
        if set(state["seeds"]) != set(self.seeds):
            raise ValueError(
                f"optimizer state has seeds {sorted(state['seeds'])}, model has {sorted(self.seeds)}"
            )
        self.host.load_state_dict(state["host"])
        for sid, opt in self.seeds.items():
            opt.load_state_dict(state["seeds"][sid])

    def param_groups_lr(self) -> float:
        return float(self.host.param_groups[0]["lr"])


def _params_of(opt: torch.optim.Optimizer) -> list[int]:
    return [id(p) for group in opt.param_groups for p in group["params"]]

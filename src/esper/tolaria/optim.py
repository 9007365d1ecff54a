"""One optimizer for host and seeds: each seed is a parameter group that joins and leaves alone.

The optimizer is the user's (or AdamW with foreach by default). Its groups without an
``esper_slot`` key are the host's; :class:`SeedGroups` adds a group per seed (with the host
group's current hyperparameters, so a learning-rate schedule carries on for it) and removes a
pruned seed's group *and its state*, never touching the host's groups or state. A scheduler's
per-group lists (``base_lrs``, ``lr_lambdas``, ...) follow the groups, so it keeps stepping
across growth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from esper.errors import ConfigError
from esper.kasmina.model import MorphogeneticModel
from esper.kasmina.optim_remap import carry_optimizer_state

__all__ = ["SLOT_KEY", "OptimizerFactory", "SchedulerFactory", "SeedGroups", "adamw"]

SLOT_KEY = "esper_slot"
"""Parameter-group key naming the slot whose seed the group trains."""

OptimizerFactory = Callable[[list[dict[str, Any]]], Optimizer]
"""Builds the optimizer from parameter groups (``[{"params": host_params}]`` at first)."""

SchedulerFactory = Callable[[Optimizer], LRScheduler]

# Scheduler attributes that hold one entry per parameter group.
_PER_GROUP = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs")


def adamw(lr: float, weight_decay: float) -> OptimizerFactory:
    """The default: AdamW with ``foreach`` (one kernel per group instead of a Python loop over
    tensors, which dominates the step for small seeds on CPU)."""

    def build(groups: list[dict[str, Any]]) -> Optimizer:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, foreach=True)

    return build


class SeedGroups:
    """Keeps ``optimizer``'s seed groups matched to the model's seeds.

    Args:
        optimizer: holds every host parameter in its groups (checked here).
        model: the morphogenetic model.
        scheduler: an LR scheduler stepping ``optimizer`` (its per-group lists follow).
    """

    def __init__(
        self, optimizer: Optimizer, model: MorphogeneticModel, scheduler: LRScheduler | None
    ) -> None:
        self.optimizer, self.scheduler = optimizer, scheduler
        _check_holds_host(optimizer, model)
        self._known: dict[str, list[nn.Parameter]] = {}  # each slot's seed parameters at the last sync
        self.params: list[nn.Parameter] = []
        """Every parameter of every group (for gradient clipping), refreshed by :meth:`sync`."""
        self.sync(model)

    def seed_groups(self) -> dict[str, dict[str, Any]]:
        return {g[SLOT_KEY]: g for g in self.optimizer.param_groups if SLOT_KEY in g}

    def sync(self, model: MorphogeneticModel) -> bool:
        """Add a group for each new seed and drop the parameters (and state) of seeds that are gone.

        A group whose parameters are still its slot's seed parameters is kept as is (with its
        state). Seed parameters the optimizer already holds (an optimizer built over a grown
        model) stay where they are; when that seed goes, they leave their group too. Parameters
        that width growth replaced (a fossilized width seed's host layers, its neighbours'
        seeds) are swapped in place with their state grown (new rows at zero moments). Returns
        whether anything changed.
        """
        remaps = model.take_param_remaps()
        carry_optimizer_state(self.optimizer, remaps)
        swapped = {id(r.old): r.new for r in remaps}
        self._known = {sid: [swapped.get(id(p), p) for p in ps] for sid, ps in self._known.items()}
        changed = bool(remaps)
        live = {s.slot_id: list(s.seed_parameters()) for s in model.slots()}
        for sid, old in list(self._known.items()):
            if [id(p) for p in old] != [id(p) for p in live.get(sid, [])]:
                self._drop(old)
                del self._known[sid]
                changed = True
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        for sid, params in live.items():
            if params and sid not in self._known:
                self._known[sid] = params
                new = [p for p in params if id(p) not in held]
                if new:
                    self._add(sid, new)
                changed = True
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        return changed

    def _drop(self, params: list[nn.Parameter]) -> None:
        """Remove ``params`` and their state from every group; a seed group left empty goes."""
        gone = {id(p) for p in params}
        for p in params:
            self.optimizer.state.pop(p, None)
        for group in list(self.optimizer.param_groups):
            kept = [p for p in group["params"] if id(p) not in gone]
            if len(kept) == len(group["params"]):
                continue
            if SLOT_KEY in group and not kept:
                self._remove(group)
            else:
                group["params"] = kept

    def _template(self) -> dict[str, Any]:
        host = next(g for g in self.optimizer.param_groups if SLOT_KEY not in g)
        return {k: v for k, v in host.items() if k != "params"}

    def _add(self, slot_id: str, params: list[nn.Parameter]) -> None:
        index = len(self.optimizer.param_groups)
        self.optimizer.add_param_group({**self._template(), "params": params, SLOT_KEY: slot_id})
        for name in _scheduler_lists(self.scheduler):
            values = getattr(self.scheduler, name)
            values.insert(index, values[0])

    def _remove(self, group: dict[str, Any]) -> None:
        index = next(i for i, g in enumerate(self.optimizer.param_groups) if g is group)
        for p in group["params"]:
            self.optimizer.state.pop(p, None)
        del self.optimizer.param_groups[index]
        for name in _scheduler_lists(self.scheduler):
            del getattr(self.scheduler, name)[index]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "seed_order": [g[SLOT_KEY] for g in self.optimizer.param_groups if SLOT_KEY in g],
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], model: MorphogeneticModel) -> None:
        """Rebuild the seed groups, in the saved order, for the model's seeds; then load.

        A host the load widened (fossilized width seeds) has new parameters: they take the old
        ones' places in their groups first.
        """
        carry_optimizer_state(self.optimizer, model.take_param_remaps())
        for group in list(self.seed_groups().values()):
            self._remove(group)
        live = {s.slot_id: list(s.seed_parameters()) for s in model.slots() if s.seed is not None}
        order = [str(sid) for sid in state["seed_order"]]
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        grouped = sorted(sid for sid, p in live.items() if p and all(id(q) not in held for q in p))
        if sorted(order) != grouped:
            raise ValueError(f"optimizer state has seed groups {sorted(order)}, the model has {grouped}")
        for sid in order:
            self._add(sid, live[sid])
        self._known = {sid: p for sid, p in live.items() if p}
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

    def lr(self) -> float:
        """The host's (first group's) current learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])


def _scheduler_lists(scheduler: LRScheduler | None) -> list[str]:
    if scheduler is None:
        return []
    return [n for n in _PER_GROUP if isinstance(getattr(scheduler, n, None), list)]


def _check_holds_host(optimizer: Optimizer, model: MorphogeneticModel) -> None:
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    missing = [name for name, p in model.host.named_parameters() if id(p) not in held]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(
            f"the optimizer does not hold {len(missing)} of the model's host parameters ({shown}); "
            f"build it over model.parameters() (or model.get_host_parameters()) of this model"
        )


def host_groups(params: Iterable[nn.Parameter]) -> list[dict[str, Any]]:
    """The groups a factory gets at the start: every host parameter in one group."""
    return [{"params": list(params)}]

"""One host epoch of training and evaluation, with AMP, gradient clipping and counterfactuals."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from esper.kasmina.model import MorphogeneticModel
from esper.kasmina.slot import SeedSlot
from esper.leyline.stages import SeedStage
from esper.tolaria.amp import autocast_context, make_scaler
from esper.tolaria.optim import OptimizerSet

__all__ = ["EpochMetrics", "Trainer", "counterfactual_slots"]

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
CorrectFn = Callable[[Tensor, Tensor], tuple[Tensor, int]]


@dataclass(frozen=True, slots=True)
class EpochMetrics:
    """Mean loss and accuracy over one pass."""

    loss: float
    accuracy: float


class Trainer:
    """Trains and evaluates a ``MorphogeneticModel``; owns the optimizers and the grad scaler.

    Args:
        model: the model (eager); ``forward_model`` is what runs batches (the compiled module
            under ``--compile``).
        loss_fn: ``loss_fn(logits, targets) -> scalar``.
        correct_fn: ``correct_fn(logits, targets) -> (hits 0-dim tensor, count)``.
        device: where batches live.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: max global grad norm (0 disables clipping).
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        *,
        loss_fn: LossFn,
        correct_fn: CorrectFn,
        device: torch.device,
        amp: str,
        lr: float,
        weight_decay: float,
        grad_clip: float,
    ) -> None:
        self.model = model
        self.forward_model: nn.Module = model
        self.loss_fn, self.correct_fn = loss_fn, correct_fn
        self.device, self.amp = device, amp
        self.grad_clip = grad_clip
        self.optimizers = OptimizerSet(model, lr, weight_decay)
        self.scaler = make_scaler(amp, device)

    def train_epoch(self, batches: Iterable[Batch]) -> EpochMetrics:
        """One pass of training; losses and hits are summed on the device (one sync at the end)."""
        self.forward_model.train()
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for x, y in batches:
            loss, batch_hits = self._train_step(x, y)
            loss_sum += loss.detach() * y.numel()
            hits += batch_hits
            count += y.numel()
        return _metrics(loss_sum, hits, count)

    def _train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.optimizers.zero_grad()
        with autocast_context(self.amp, self.device):
            logits = self.forward_model(x)
            loss = self.loss_fn(logits, y)
        self.scaler.scale(loss).backward()
        opts = list(self.optimizers.all())
        if self.grad_clip > 0:
            for opt in opts:
                self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.optimizers.params, self.grad_clip, foreach=True)
        for opt in opts:
            self.scaler.step(opt)
        self.scaler.update()
        hits, _ = self.correct_fn(logits.detach(), y)
        return loss, hits

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> EpochMetrics:
        """Validation loss and accuracy of the model as it is."""
        self.forward_model.eval()
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for x, y in batches:
            with autocast_context(self.amp, self.device):
                logits = self.forward_model(x)
                loss = self.loss_fn(logits, y)
            loss_sum += loss.float() * y.numel()
            hits += self.correct_fn(logits, y)[0]
            count += y.numel()
        return _metrics(loss_sum, hits, count)

    @torch.no_grad()
    def counterfactuals(self, batches: Iterable[Batch], slots: list[SeedSlot]) -> dict[str, float]:
        """Per slot: validation accuracy as is minus with that slot's alpha forced to 0.

        One batched pass: each batch is repeated ``len(slots) + 1`` times and every slot gets a
        per-sample alpha that is 0 only in its own copy (copy 0 is the model as is). Every
        per-sample op in the hosts (eval-mode BatchNorm, LayerNorm, causal attention) keeps
        the copies independent, so this equals separate passes.
        """
        if not slots:
            return {}
        self.model.eval()
        k = len(slots) + 1
        hits = torch.zeros(k, device=self.device, dtype=torch.long)
        count = 0
        for x, y in batches:
            b = x.shape[0]
            with _forced_alphas(slots, b, k), autocast_context(self.amp, self.device):
                logits = self.model(x.repeat(k, *([1] * (x.dim() - 1))))
            pred = logits.argmax(dim=-1).view(k, b, *y.shape[1:])
            hits += (pred == y.unsqueeze(0)).flatten(1).sum(dim=1)
            count += y.numel()
        acc = (hits.double() / max(count, 1)).tolist()  # host sync, once
        return {s.slot_id: acc[0] - acc[i + 1] for i, s in enumerate(slots)}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": self.optimizers.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizers.load_state_dict(state["optimizers"], self.model)
        self.scaler.load_state_dict(state["scaler"])


def _forced_alphas(slots: list[SeedSlot], b: int, k: int) -> ExitStack:
    """Force per-sample alphas on every slot for a ``k``-way replicated batch of ``b``."""
    stack = ExitStack()
    for i, slot in enumerate(slots):
        shape = (k * b, 1, 1, 1) if slot.topology == "cnn" else (k * b, 1, 1)
        alpha = torch.full(shape, slot.alpha, device=slot.alpha_tensor.device)
        alpha[(i + 1) * b : (i + 2) * b] = 0.0
        stack.enter_context(slot.force_alpha(alpha))
    return stack


def counterfactual_slots(model: MorphogeneticModel) -> list[SeedSlot]:
    """Slots whose contribution drives decisions: BLENDING and HOLDING.

    FOSSILIZED seeds are permanent, so measuring them would cost a validation pass per seed
    every epoch for a number nobody acts on.
    """
    return [s for s in model.slots() if s.stage in (SeedStage.BLENDING, SeedStage.HOLDING)]


def _metrics(loss_sum: Tensor, hits: Tensor, count: int) -> EpochMetrics:
    if count == 0:
        raise ValueError("no batches: the dataset split is empty")
    values = torch.stack([loss_sum.double(), hits.double()]).tolist()  # host sync, once
    return EpochMetrics(loss=values[0] / count, accuracy=values[1] / count)

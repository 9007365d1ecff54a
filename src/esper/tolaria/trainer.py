"""One pass of training or evaluation, with AMP, gradient clipping and batched counterfactuals.

A :class:`Trainer` runs batches through whatever module it is handed (the eager model, its
compiled or DDP-wrapped form), so the engine can re-wrap the model after growth without
rebuilding the trainer. Losses and hits are summed on the device: one host sync per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torch.utils.flop_counter import FlopCounterMode

from esper.kasmina.model import MorphogeneticModel
from esper.kasmina.slot import SeedSlot
from esper.leyline.stages import SeedStage
from esper.tolaria.amp import autocast_context, make_scaler
from esper.tolaria.data import BatchError
from esper.tolaria.optim import SeedGroups

__all__ = [
    "CorrectFn",
    "EpochMetrics",
    "LossFn",
    "Trainer",
    "accuracy_hits",
    "counterfactual_slots",
    "cross_entropy_loss",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(outputs, targets) -> scalar``."""
CorrectFn = Callable[[Tensor, Tensor], tuple[Tensor, int]]
"""``metric_fn(outputs, targets) -> (hits as a 0-dim tensor, count)``: accuracy = hits / count."""


def cross_entropy_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy; ``(B, C)`` with ``(B,)``, or token-level ``(B, T, V)`` with ``(B, T)``."""
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def accuracy_hits(logits: Tensor, targets: Tensor) -> tuple[Tensor, int]:
    """Correct argmax predictions (0-dim, on the device: no sync) and how many were made."""
    return (logits.argmax(dim=-1) == targets).sum(), targets.numel()


@dataclass(frozen=True, slots=True)
class EpochMetrics:
    """Mean loss and accuracy over one pass; a training pass may also say how many examples it
    saw and the training FLOPs per example it measured (None when not counted)."""

    loss: float
    accuracy: float
    examples: int = 0
    flops_per_example: float | None = None


class Trainer:
    """Trains and evaluates a ``MorphogeneticModel`` with one optimizer (see :class:`SeedGroups`).

    Args:
        model: the (eager) model; counterfactuals run on it.
        groups: the optimizer and its seed groups.
        loss_fn: the training and validation loss.
        metric_fn: hits and count of a batch (default :func:`accuracy_hits`).
        device: where batches live.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``.
        grad_clip: max global grad norm (0 disables clipping).
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        groups: SeedGroups,
        *,
        loss_fn: LossFn,
        metric_fn: CorrectFn,
        device: torch.device,
        amp: str,
        grad_clip: float,
    ) -> None:
        self.model, self.groups = model, groups
        self.loss_fn, self.metric_fn = loss_fn, metric_fn
        self.device, self.amp = device, amp
        self.grad_clip = grad_clip
        self.scaler = make_scaler(amp, device)

    def train_epoch(
        self, forward: nn.Module, batches: Iterable[tuple[Any, Tensor]], *, count_flops: bool = False
    ) -> EpochMetrics:
        """One pass of training through ``forward``.

        With ``count_flops`` the first batch runs under ``FlopCounterMode`` (the real step,
        counted, not an extra pass) and the result reports FLOPs per example.
        """
        forward.train()
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device, dtype=torch.long)
        count = examples = 0
        per_example: float | None = None
        for x, y in batches:
            if count_flops and per_example is None:
                with FlopCounterMode(display=False) as counter:
                    loss, batch_hits, n = self._train_step(forward, x, y)
                per_example = counter.get_total_flops() / max(_batch_size(x), 1)
            else:
                loss, batch_hits, n = self._train_step(forward, x, y)
            loss_sum += loss.detach() * n
            hits += batch_hits
            count += n
            examples += _batch_size(x)
        metrics = _metrics(loss_sum, hits, count)
        return EpochMetrics(metrics.loss, metrics.accuracy, examples, per_example)

    def _train_step(self, forward: nn.Module, x: Any, y: Tensor) -> tuple[Tensor, Tensor, int]:
        opt = self.groups.optimizer
        opt.zero_grad(set_to_none=True)
        with autocast_context(self.amp, self.device):
            logits = _call(forward, x)
            loss = _scalar(self.loss_fn(logits, y))
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.groups.params, self.grad_clip, foreach=True)
        self.scaler.step(opt)
        self.scaler.update()
        hits, n = self.metric_fn(logits.detach(), y)
        return loss, hits, n

    @torch.no_grad()
    def evaluate(self, forward: nn.Module, batches: Iterable[tuple[Any, Tensor]]) -> EpochMetrics:
        """Validation loss and accuracy of the model as it is."""
        forward.eval()
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for x, y in batches:
            with autocast_context(self.amp, self.device):
                logits = _call(forward, x)
                loss = _scalar(self.loss_fn(logits, y))
            batch_hits, n = self.metric_fn(logits, y)
            loss_sum += loss.float() * n
            hits += batch_hits
            count += n
        return _metrics(loss_sum, hits, count)

    @torch.no_grad()
    def counterfactuals(
        self, batches: Iterable[tuple[Any, Tensor]], slots: Sequence[SeedSlot]
    ) -> dict[str, float]:
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
            if not isinstance(x, Tensor):
                raise BatchError(f"counterfactuals need tensor inputs, got {type(x).__name__}")
            b = x.shape[0]
            with _forced_alphas(slots, b, k), autocast_context(self.amp, self.device):
                logits = self.model(x.repeat(k, *([1] * (x.dim() - 1))))
            for i, chunk in enumerate(logits.chunk(k)):
                chunk_hits, n = self.metric_fn(chunk, y)
                hits[i] += chunk_hits
            count += n
        acc = (hits.double() / max(count, 1)).tolist()  # host sync, once
        return {s.slot_id: acc[0] - acc[i + 1] for i, s in enumerate(slots)}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.groups.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groups.load_state_dict(state["optimizer"], self.model)
        self.scaler.load_state_dict(state["scaler"])


def _call(forward: nn.Module, x: Any) -> Tensor:
    """Positional arguments from a tuple input, else the input itself."""
    return forward(*x) if isinstance(x, tuple) else forward(x)


def _batch_size(x: Any) -> int:
    first = x[0] if isinstance(x, tuple) else x
    return int(first.shape[0]) if isinstance(first, Tensor) else 0


def _scalar(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise BatchError(f"the loss must be a scalar tensor (0-dim); loss_fn returned {shape}")
    return loss


def _forced_alphas(slots: Sequence[SeedSlot], b: int, k: int) -> ExitStack:
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

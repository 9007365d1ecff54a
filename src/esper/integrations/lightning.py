"""Grow seeds from a Lightning ``Trainer``: :class:`MorphogenesisCallback`.

Put slots in your model with ``esper.inject_slots`` (in the ``LightningModule``'s
``__init__``) and add the callback; Lightning trains, the callback drives the lifecycle::

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = esper.inject_slots(ResNet(), ["layer2", "layer3"], example_input=x0)
        ...  # training_step, validation_step, configure_optimizers as usual

    trainer = L.Trainer(max_epochs=30, callbacks=[MorphogenesisCallback("heuristic")])
    trainer.fit(Lit(), train_loader, val_loader)

At the end of every training epoch it runs an :class:`esper.Grower` step: it measures
accuracy and each seed's counterfactual contribution on the Trainer's validation
dataloaders (or your ``evaluate``), steps the slots, asks the controller, and adds or removes
seed parameter groups in the Trainer's optimizer. Lifecycle metrics go through
``pl_module.log`` (``esper/seeds_germinated``, ``esper/seed/<slot>/alpha``, ...), and the
grower's state goes into Lightning checkpoints, so ``trainer.fit(model, ckpt_path=...)``
resumes a grown run: Lightning re-creates the seeds when it loads the module's state, and
the callback gives the seeds their own optimizer groups in ``on_fit_start``, before Lightning
restores the optimizer state (which holds those groups).

Importing this module needs ``lightning`` (``pip install 'esper[lightning]'``); ``esper``
itself never imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from esper.errors import ConfigError
from esper.integrations.loop import Grower
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.observation import Policy
from esper.tolaria.engine import EpochReport, Evaluate
from esper.tolaria.optim import SLOT_KEY
from esper.tolaria.trainer import CorrectFn, LossFn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # an optional dependency
    raise ImportError(
        "esper.integrations.lightning needs the lightning package: pip install 'esper[lightning]'"
    ) from exc

__all__ = ["MorphogenesisCallback", "find_morphogenetic_model"]


class MorphogenesisCallback(Callback):
    """Drives the seeds of the ``MorphogeneticModel`` inside a ``LightningModule``.

    Args:
        controller: ``"heuristic"``, ``"random"``, ``"static"``, or a :class:`Policy`.
        epochs: the run's length for the controller (default: the Trainer's ``max_epochs``).
        evaluate: ``evaluate(model) -> accuracy`` instead of the Trainer's validation data.
        loss_fn / metric_fn: for the validation data (default cross-entropy and accuracy).
        max_seed_params: the seed parameter budget.
        blueprints: the blueprints the controller may use.
        run_dir: where ``events.jsonl`` and ``metrics.csv`` go (``esper report`` reads them).
        log_prefix: the prefix of the logged metric names.
    """

    def __init__(
        self,
        controller: Policy | str = "heuristic",
        *,
        epochs: int | None = None,
        evaluate: Evaluate | None = None,
        loss_fn: LossFn | None = None,
        metric_fn: CorrectFn | None = None,
        max_seed_params: int | None = None,
        blueprints: tuple[str, ...] | None = None,
        run_dir: str | Path | None = None,
        log_prefix: str = "esper",
    ) -> None:
        self.controller = controller
        self.epochs, self.evaluate = epochs, evaluate
        self.loss_fn, self.metric_fn = loss_fn, metric_fn
        self.max_seed_params, self.blueprints = max_seed_params, blueprints
        self.run_dir, self.log_prefix = run_dir, log_prefix
        self.grower: Grower | None = None
        self._loaded: dict[str, Any] | None = None  # from a checkpoint, applied in on_fit_start

    # ----------------------------------------------------------------- Lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the grower over the Trainer's optimizer (and restore it on a resume).

        Lightning has configured the optimizer and not yet restored its state: the seeds that
        loading the module re-created get their own groups here, so the checkpoint's
        optimizer state (host group + seed groups) fits.
        """
        model = find_morphogenetic_model(pl_module)
        optimizer = _single_optimizer(trainer)
        _take_seeds_out_of_host_groups(optimizer, model)
        self.grower = Grower(
            model,
            optimizer,
            epochs=self.epochs or _max_epochs(trainer),
            controller=self.controller,
            val_data=None if self.evaluate is not None else _ValidationBatches(trainer),
            evaluate=self.evaluate,
            loss_fn=self.loss_fn,
            metric_fn=self.metric_fn,
            max_seed_params=self.max_seed_params,
            blueprints=self.blueprints,
            run_dir=self.run_dir,
        )
        if self._loaded is not None:
            self.grower.load_state_dict(self._loaded)
            self._loaded = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One grower step after the epoch's training (and validation) pass."""
        grower = self._grower()
        modes = [(m, m.training) for m in pl_module.modules()]
        report = grower.step()
        for module, training in modes:  # validation passes leave the model in eval mode
            module.training = training
        self._log(pl_module, grower, report)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.grower is not None:
            self.grower.close()

    def state_dict(self) -> dict[str, Any]:
        """The grower's state (model, optimizer groups, controller, history) for the checkpoint."""
        if self.grower is None:
            return dict(self._loaded or {})
        return self.grower.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's state until ``on_fit_start`` (the optimizer does not exist yet)."""
        self._loaded = dict(state_dict) if state_dict else None

    # ----------------------------------------------------------------- helpers
    def _grower(self) -> Grower:
        if self.grower is None:
            raise ConfigError("MorphogenesisCallback steps only inside Trainer.fit (on_fit_start builds it)")
        return self.grower

    def _log(self, pl_module: pl.LightningModule, grower: Grower, report: EpochReport) -> None:
        p = self.log_prefix
        values: dict[str, float] = {f"{p}/{k}": float(v) for k, v in grower.engine.counters.items()}
        values[f"{p}/seed_params"] = float(grower.model.active_seed_params)
        values[f"{p}/val_accuracy"] = float(report.val_accuracy)
        for slot in grower.model.slots():
            if slot.seed is None:
                continue
            values[f"{p}/seed/{slot.slot_id}/alpha"] = float(slot.alpha)
            values[f"{p}/seed/{slot.slot_id}/stage"] = float(int(slot.stage))
            contribution = slot.state.metrics.counterfactual_contribution
            if contribution is not None:
                values[f"{p}/seed/{slot.slot_id}/contribution"] = float(contribution)
        for name, value in values.items():
            pl_module.log(name, value, on_step=False, on_epoch=True)


def find_morphogenetic_model(module: nn.Module) -> MorphogeneticModel:
    """The one :class:`MorphogeneticModel` among ``module``'s submodules."""
    found = [(name, m) for name, m in module.named_modules() if isinstance(m, MorphogeneticModel)]
    outer = [(n, m) for n, m in found if not any(n.startswith(o + ".") for o, _ in found if o != n)]
    if not outer:
        raise ConfigError(
            f"{type(module).__name__} holds no MorphogeneticModel for MorphogenesisCallback to grow: "
            "inject slots in its __init__, e.g. self.net = esper.inject_slots(MyNet(), ['layer2'], "
            "example_input=x)"
        )
    if len(outer) > 1:
        names = [n for n, _ in outer]
        raise ConfigError(
            f"{type(module).__name__} holds {len(outer)} MorphogeneticModels ({names}); "
            "MorphogenesisCallback grows exactly one"
        )
    return outer[0][1]


def _single_optimizer(trainer: pl.Trainer) -> Optimizer:
    optimizers = trainer.optimizers
    if len(optimizers) != 1:
        raise ConfigError(
            f"MorphogenesisCallback supports a LightningModule with exactly one optimizer; "
            f"configure_optimizers gave {len(optimizers)}. Return one optimizer over all parameters "
            "(several parameter groups in it are fine): the seeds' groups join it"
        )
    return optimizers[0]


def _max_epochs(trainer: pl.Trainer) -> int:
    epochs = trainer.max_epochs
    if epochs is None or epochs < 1:
        raise ConfigError(
            f"the Trainer has max_epochs={epochs}; give MorphogenesisCallback(epochs=N), the run's "
            "length that the controller plans against"
        )
    return int(epochs)


def _take_seeds_out_of_host_groups(optimizer: Optimizer, model: MorphogeneticModel) -> None:
    """Remove seed parameters from the optimizer's own groups (``configure_optimizers`` saw the
    seeds that loading a checkpoint re-created); the grower gives them their own groups."""
    seeds = {id(p) for slot in model.slots() for p in slot.seed_parameters()}
    for group in optimizer.param_groups:
        if SLOT_KEY not in group:
            group["params"] = [p for p in group["params"] if id(p) not in seeds]


class _ValidationBatches:
    """The Trainer's validation dataloaders as one iterable of batches, read when iterated."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer

    def __iter__(self) -> Iterator[Any]:
        loaders = self.trainer.val_dataloaders
        if loaders is None:
            raise ConfigError(
                "MorphogenesisCallback measures seeds on the validation data: pass val_dataloaders "
                "to Trainer.fit (and keep limit_val_batches > 0), or give it evaluate=..."
            )
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            yield from loader

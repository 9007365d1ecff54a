"""Grow seeds from your own training loop: call :meth:`Grower.step` once per epoch.

The grower wraps an :class:`~esper.tolaria.engine.Engine` that does not train (you do): each
``step()`` is the engine's ``finish_epoch`` (governor, validation, counterfactual
contributions, every slot's ``step_epoch()``, the ``epoch_end`` event) and then the decision
step (``ask`` the controller, apply through the engine's door, which adds new seeds' parameter
groups to *your* optimizer and removes pruned ones). Example::

    model = esper.inject_slots(net, ["layer2", "layer3"], example_input=x0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grower = esper.Grower(model, opt, val_data=val_loader, epochs=30, run_dir="runs/mine")
    for epoch in range(30):
        for x, y in train_loader:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
        grower.step()

Data-parallel (under ``torchrun``): pass ``comm`` (from
:func:`~esper.tolaria.distributed.distributed_session`), train through
:attr:`Grower.forward_model` (the model in ``DistributedDataParallel``, re-wrapped after every
growth event, so take it afresh each epoch) on your rank's shard of the data
(``DistributedSampler``, or :func:`~esper.tolaria.distributed.shard_data`), and give ``step``
your rank's training loss: the grower averages it over ranks. Rank 0 decides and writes
``run_dir``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from esper.kasmina.model import MorphogeneticModel
from esper.leyline.events import RunFinished, RunStarted
from esper.leyline.observation import Policy
from esper.nissa.csv_sink import CsvMetricsSink
from esper.nissa.jsonl import JsonlSink
from esper.nissa.telemetry import Sink, Telemetry
from esper.tolaria.distributed import Communicator
from esper.tolaria.engine import Engine, EngineConfig, EpochReport, Evaluate
from esper.tolaria.lifecycle import ActionOutcome
from esper.tolaria.trainer import CorrectFn, EpochMetrics, LossFn

__all__ = ["Grower"]


class Grower:
    """The lifecycle of a model's seeds, driven from a loop you own.

    Args:
        model: a :class:`MorphogeneticModel` (e.g. from ``esper.inject_slots``).
        optimizer: your optimizer over the model's parameters; seed groups join and leave it.
        controller: ``"heuristic"``, ``"random"``, ``"static"``, or a :class:`Policy`.
        epochs: how many epochs you will train (observations report progress against it).
        val_data: validation batches (``(inputs, targets)``), or pass ``evaluate``.
        evaluate: ``evaluate(model) -> accuracy`` instead of ``val_data``.
        scheduler: your LR scheduler; each ``step()`` steps it once (do not step it yourself too), and
            its per-group lists follow the seed groups.
        loss_fn / metric_fn: for ``val_data`` (default cross-entropy and argmax accuracy).
        max_seed_params: the seed parameter budget.
        blueprints: the blueprints the controller may use (default: all the slots take).
        run_dir: where ``events.jsonl`` and ``metrics.csv`` go (so ``esper report`` works).
        sinks: more event sinks (e.g. ``TensorBoardSink``).
        comm: the data-parallel ranks (default: this process alone); see the module docstring.
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        optimizer: Optimizer,
        *,
        epochs: int,
        controller: Policy | str = "heuristic",
        val_data: Iterable[Any] | None = None,
        evaluate: Evaluate | None = None,
        scheduler: LRScheduler | None = None,
        loss_fn: LossFn | None = None,
        metric_fn: CorrectFn | None = None,
        max_seed_params: int | None = None,
        blueprints: tuple[str, ...] | None = None,
        run_dir: str | Path | None = None,
        sinks: list[Sink] | None = None,
        comm: Communicator | None = None,
    ) -> None:
        self.controller = _controller(controller)
        config = EngineConfig(epochs=epochs, max_seed_params=max_seed_params, blueprints=blueprints)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        writes = comm is None or comm.is_main  # rank 0 writes the run folder
        self.run_dir = None if run_dir is None or not writes else Path(run_dir)
        self.telemetry = Telemetry(sinks or [])  # the run folder's sinks join at the first step
        self.engine = Engine(
            model,
            None,
            val_data,
            config,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=loss_fn,
            metric_fn=metric_fn,
            evaluate=evaluate,
            telemetry=self.telemetry,
            device=device,
            comm=comm,
        )
        self.last_outcome: ActionOutcome | None = None
        self._started = False

    @property
    def model(self) -> MorphogeneticModel:
        return self.engine.model

    @property
    def forward_model(self) -> torch.nn.Module:
        """What to train through: the model, or its current DDP wrap when data-parallel."""
        return self.engine.forward_model

    def step(self, train_loss: float | None = None, train_accuracy: float | None = None) -> EpochReport:
        """Call once after each epoch's training pass.

        Args:
            train_loss: the epoch's mean training loss; with it the governor can roll back a
                divergent epoch (restoring model and optimizer to the last good epoch).
            train_accuracy: the epoch's training accuracy (recorded only).
        """
        if not self._started:
            self._start()
        train = None if train_loss is None else self._over_ranks(train_loss, train_accuracy or 0.0)
        report = self.engine.finish_epoch(train)
        self.last_outcome = self.engine.ask(self.controller)
        return report

    def _over_ranks(self, loss: float, accuracy: float) -> EpochMetrics:
        """The mean over ranks of each rank's training metrics (the governor's input)."""
        comm = self.engine.comm
        totals = torch.tensor([float(loss), float(accuracy)], dtype=torch.float64, device=self.engine.device)
        mean_loss, mean_accuracy = (comm.all_sum(totals) / comm.world_size).tolist()
        return EpochMetrics(mean_loss, mean_accuracy)

    def _start(self) -> None:
        self._started = True
        for sink in _run_dir_sinks(self.run_dir):
            self.telemetry.add_sink(sink)
        self.telemetry.emit(
            RunStarted(
                epoch=self.engine.epoch,
                config={
                    "epochs": self.engine.config.epochs,
                    "max_seed_params": self.engine.config.max_seed_params,
                },
                task="own-loop",
                controller=self.controller.name,
                seed=0,
                device=str(self.engine.device),
                host_params=self.engine.host_params,
            )
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything that restores the grown run: model (with its seeds), optimizer (with the
        seed groups), scheduler, controller, governor and history. Save it in your checkpoint."""
        return {"engine": self.engine.state_dict(), "controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a grower over a freshly built model and optimizer
        (it re-creates the seeds and their optimizer groups; load it instead of theirs)."""
        self.engine.load_state_dict(state["engine"])
        self.controller.load_state_dict(state["controller"])

    def close(self) -> None:
        """Emit ``run_finished`` and close the sinks."""
        self.telemetry.emit(RunFinished(epoch=self.engine.epoch, summary=dict(self.engine.counters)))
        self.telemetry.close()

    def __enter__(self) -> Grower:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _controller(spec: Policy | str) -> Policy:
    if not isinstance(spec, str):
        return spec
    from esper.tamiyo.factory import make_controller
    from esper.tolaria.config import RunConfig

    return make_controller(RunConfig(controller=spec))


def _run_dir_sinks(run_dir: Path | None) -> list[Sink]:
    if run_dir is None:
        return []
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = (run_dir / "events.jsonl").exists()  # a resumed run appends
    return [
        JsonlSink(run_dir / "events.jsonl", append=resume),
        CsvMetricsSink(run_dir / "metrics.csv", resume=resume and (run_dir / "metrics.csv").exists()),
    ]

"""The Tolaria engine: a steppable morphogenetic training run with one door for structural change.

A run is three calls, repeated::

    while engine.epoch < epochs:
        engine.train_epoch()                                # train, governor, evaluate, step slots
        engine.apply(controller.decide(engine.observe()))   # the door

The engine owns no controller. Every germinate, prune, fossilize, advance and rollback goes
through one method (:meth:`Engine._change`) that checks legality from the table the action
masks are computed from (:class:`~esper.leyline.legality.JointLegality`, which includes the
seed parameter budget), adds new seeds' parameter groups to the optimizer and removes pruned
ones with their state, rebuilds the forward module (:meth:`Engine._rewire`: Dynamo reset, the
``wrap`` hook where DDP re-wraps), re-takes the governor's rollback point and emits the
lifecycle events. Constructing an engine does no I/O: build the data, model and optimizer
first and hand them over.

Data parallelism enters through one object, the ``comm``
(:class:`~esper.tolaria.distributed.Communicator`; the default is the single process, where
every call is the identity): the engine trains on its shard of the data, the trainer sums each
pass's totals over ranks, the controller decides on rank 0 (:meth:`Engine.ask`), and the
``wrap`` hook (by default ``comm.wrap``: ``DistributedDataParallel``) runs after every
structural change.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from esper.errors import ConfigError
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.events import EpochEnd, Event, Rollback, SeedSnapshot
from esper.leyline.legality import JointLegality
from esper.leyline.observation import Observation, Policy
from esper.leyline.stages import OUTPUT_STAGES, SeedStage
from esper.nissa.telemetry import Telemetry
from esper.tolaria.data import data_rng_state, iter_batches, load_data_rng_state, set_data_epoch
from esper.tolaria.distributed import Communicator
from esper.tolaria.engine_config import (
    EngineConfig,
    EpochReport,
    Evaluate,
    all_blueprints,
    build_governor,
    build_groups,
    check_budget,
)
from esper.tolaria.lifecycle import ActionOutcome, apply_action, diff_events, observe, snapshot_slots
from esper.tolaria.optim import OptimizerFactory, SchedulerFactory
from esper.tolaria.trainer import (
    CorrectFn,
    EpochMetrics,
    LossFn,
    Trainer,
    accuracy_hits,
    counterfactual_slots,
    cross_entropy_loss,
)

__all__ = ["Engine", "EngineConfig", "EpochReport", "Evaluate"]


_COUNTED = {
    "seed_germinated": "seeds_germinated",
    "seed_pruned": "seeds_pruned",
    "seed_fossilized": "seeds_fossilized",
}


class Engine:
    """A morphogenetic training run that a controller (or a person) steps one epoch at a time.

    Args:
        model: the model (moved to ``device``).
        train_data: iterable of ``(inputs, targets)`` batches (a ``DataLoader``, an Esper
            :class:`~esper.tolaria.data.TaskBatches`, a list); None when the user trains
            (then call :meth:`finish_epoch` after each of their passes).
        val_data: validation batches; or pass ``evaluate``.
        config: the engine's settings.
        optimizer: an optimizer over the model's host parameters, or a factory from parameter
            groups (default: AdamW with foreach). Seed groups join and leave it.
        scheduler: an LR scheduler for that optimizer, or a factory; stepped once per epoch.
        loss_fn / metric_fn: default cross-entropy and argmax accuracy (token-level for LMs).
        evaluate: the user's validation (model -> accuracy) instead of ``val_data``.
        telemetry: where events go.
        device: where training runs.
        wrap: applied to the model after every structural change to get the module batches
            run through (default ``comm.wrap``: the model itself, or a fresh
            ``DistributedDataParallel`` of it).
        comm: the data-parallel ranks (default: this process alone). The engine shards
            ``train_data`` and ``val_data`` with it.
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        train_data: Iterable[Any] | None,
        val_data: Iterable[Any] | None,
        config: EngineConfig,
        *,
        optimizer: Optimizer | OptimizerFactory | None = None,
        scheduler: LRScheduler | SchedulerFactory | None = None,
        loss_fn: LossFn | None = None,
        metric_fn: CorrectFn | None = None,
        evaluate: Evaluate | None = None,
        telemetry: Telemetry | None = None,
        device: torch.device | str = "cpu",
        wrap: Callable[[MorphogeneticModel], nn.Module] | None = None,
        comm: Communicator | None = None,
    ) -> None:
        if (val_data is None) == (evaluate is None):
            raise ConfigError("give the engine exactly one of val_data (batches) or evaluate (a function)")
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.comm = comm or Communicator(self.device)
        self.train_data = None if train_data is None else self.comm.shard(train_data, train=True)
        self.val_data = None if val_data is None else self.comm.shard(val_data, train=False)
        self._evaluate = evaluate
        self.telemetry = telemetry or Telemetry()
        self.blueprints = tuple(config.blueprints or all_blueprints(model))
        check_budget(model, config.max_seed_params, self.blueprints)
        self.groups = build_groups(optimizer, scheduler, model, config)
        self.trainer = Trainer(
            model,
            self.groups,
            loss_fn=loss_fn or cross_entropy_loss,
            metric_fn=metric_fn or accuracy_hits,
            device=self.device,
            amp=config.amp,
            grad_clip=config.grad_clip,
            reduce=self.comm.all_sum,
        )
        self.governor = build_governor(config)
        self._wrap = wrap or self.comm.wrap
        self._compiled: tuple[nn.Module, nn.Module] | None = None  # (what was compiled, compiled)
        self.forward_model: nn.Module = model
        self._rewire()
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []
        self.counters = {"seeds_germinated": 0, "seeds_fossilized": 0, "seeds_pruned": 0}
        self.wall_time_s = 0.0
        self.train_flops = 0.0
        """Training FLOPs so far (measured on one batch per model structure)."""
        self._flops_per_example: float | None = None
        self._good_state = self._capture()

    @property
    def optimizer(self) -> Optimizer:
        return self.groups.optimizer

    @property
    def scheduler(self) -> LRScheduler | None:
        return self.groups.scheduler

    # ----------------------------------------------------------------- the three calls
    def train_epoch(self) -> EpochReport:
        """Train one epoch on ``train_data``, then :meth:`finish_epoch`."""
        if self.train_data is None:
            raise ConfigError("this engine has no train_data: train in your loop and call finish_epoch()")
        start = time.perf_counter()
        set_data_epoch(self.train_data, self.epoch)
        count = self._flops_per_example is None and not self.config.compile  # Dynamo and counting don't mix
        train = self.trainer.train_epoch(
            self.forward_model, iter_batches(self.train_data, self.device), count_flops=count
        )
        if train.flops_per_example is not None:
            self._flops_per_example = train.flops_per_example
        self.train_flops += (self._flops_per_example or 0.0) * train.examples
        return self.finish_epoch(train, started=start)

    def finish_epoch(self, train: EpochMetrics | None = None, *, started: float | None = None) -> EpochReport:
        """Everything after an epoch's training pass: rank 0's buffers everywhere, governor
        (rollback), LR schedule, validation, counterfactual contributions, every slot's
        ``step_epoch()`` and the ``epoch_end`` event. Under data parallelism ``train`` must be
        the same on every rank (:meth:`train_epoch`'s is)."""
        start = time.perf_counter() if started is None else started
        self.comm.sync_buffers(self.model)
        verdict = None if train is None else self.governor.verdict(train.loss)
        if verdict is not None:
            self._rollback(verdict)
        elif train is not None:
            self.governor.accept(train.loss)
        if self.scheduler is not None:
            self.scheduler.step()
        val_loss, val_acc = self._validate()
        contributions = self._contributions(val_acc)
        for sid, c in contributions.items():
            self.model.slot(sid).record_contribution(c)
        self.history.append(
            {
                "train_loss": float("nan") if train is None else train.loss,
                "train_accuracy": float("nan") if train is None else train.accuracy,
                "val_loss": float("nan") if val_loss is None else val_loss,
                "val_accuracy": val_acc,
            }
        )
        self._change(self._step_slots, snapshot=False)
        self.wall_time_s += time.perf_counter() - start
        self._emit_epoch_end()
        self.epoch += 1
        # After a rollback too: the restored, pruned state is good, and the next rollback must
        # not send the run back to an older epoch.
        self._good_state = self._capture()
        return EpochReport(self.epoch - 1, train, val_loss, val_acc, contributions, verdict)

    def observe(self) -> Observation:
        """The controller's view after the last epoch."""
        if not self.history:
            raise ConfigError(
                "observe() needs a finished epoch: call train_epoch() (or finish_epoch()) first"
            )
        return observe(
            self.model,
            epoch=self.epoch - 1,
            max_epochs=self.config.epochs,
            history=self.history,
            max_seed_params=self.config.max_seed_params,
            blueprints=self.blueprints,
        )

    def ask(self, controller: Policy) -> ActionOutcome:
        """The decision step: ``apply(controller.decide(observe()))`` (decided on rank 0 and
        applied on every rank when data-parallel)."""
        return self.apply(self.comm.decide(controller, self.observe()))

    def apply(self, action: Action) -> ActionOutcome:
        """The door: apply ``action`` if the legality table allows it; refused ones change nothing."""
        if action.op == LifecycleOp.WAIT:
            return ActionOutcome(True)
        obs = self.observe()
        reason = JointLegality.from_observation(obs).refusal(obs, action)
        if reason is not None:
            return ActionOutcome(False, reason)
        return self._change(lambda: apply_action(self.model, action))

    # ----------------------------------------------------------------- the door
    def _change(self, mutate: Callable[[], ActionOutcome], *, snapshot: bool = True) -> ActionOutcome:
        """Run ``mutate`` on the model, then bring everything that depends on its structure along
        (``snapshot=False`` where the caller re-takes the rollback point itself)."""
        before = snapshot_slots(self.model)
        outcome = mutate()
        events = diff_events(self.model, before, self.epoch)
        structural = any(e.EVENT != "alpha_changed" for e in events)
        if structural:
            self.groups.sync(self.model)
            self._rewire()
            self._flops_per_example = None  # a new structure costs differently: count again
            assert self.config.max_seed_params is None or self.effective_budget_ok(), "budget exceeded"
        for event in events:
            counter = _COUNTED.get(event.EVENT)
            if counter is not None:
                self.counters[counter] += 1
            self._emit(event)
        if structural and snapshot:
            self._good_state = self._capture()
        return outcome

    def _rewire(self) -> None:
        """Rebuild the module batches run through after a structural change.

        Every structural change is a Dynamo recompile; resetting keeps the cache from hitting
        ``recompile_limit`` (after which compiled code silently falls back to eager). ``wrap``
        is the distributed hook: DDP registers gradient hooks only for the parameters present
        when it wraps, so a grown model must be wrapped again.
        """
        module = self._wrap(self.model)
        if self.config.compile:
            torch._dynamo.reset()
            if self._compiled is None or self._compiled[0] is not module:
                compiled = torch.compile(module, backend=self.config.compile_backend)
                assert isinstance(compiled, nn.Module)  # compiling a module gives an OptimizedModule
                self._compiled = (module, compiled)
            module = self._compiled[1]
        self.forward_model = module

    def _step_slots(self) -> ActionOutcome:
        for slot in self.model.slots():
            slot.step_epoch()
        return ActionOutcome(True)

    def _rollback(self, reason: str) -> None:
        """Restore the last good state and prune the seeds that were blending (through the door)."""
        restored_epoch = self._good_state["epoch"]
        timeline = (self.epoch, self.wall_time_s, self.train_flops)
        self._restore(copy.deepcopy(self._good_state))
        # The weights go back; the run's clock and the compute it spent do not.
        self.epoch, self.wall_time_s, self.train_flops = timeline
        pruned = [s.slot_id for s in self.model.slots() if s.stage == SeedStage.BLENDING]

        def prune() -> ActionOutcome:
            for sid in pruned:
                self.model.slot(sid).prune(f"rollback: {reason}")
            return ActionOutcome(True)

        self._change(prune, snapshot=False)
        self.governor.rollbacks += 1
        self._emit(
            Rollback(
                epoch=self.epoch,
                reason=reason,
                restored_epoch=restored_epoch,
                pruned_slot=pruned[-1] if pruned else None,
            )
        )

    # ----------------------------------------------------------------- validation
    def _validate(self) -> tuple[float | None, float]:
        if self._evaluate is not None:
            self.model.eval()
            with torch.no_grad():
                return None, float(self._evaluate(self.model))
        assert self.val_data is not None
        val = self.trainer.evaluate(self.forward_model, iter_batches(self.val_data, self.device))
        return val.loss, val.accuracy

    def _contributions(self, accuracy: float) -> dict[str, float]:
        """Each BLENDING/HOLDING seed's counterfactual contribution (accuracy minus with alpha 0)."""
        slots = counterfactual_slots(self.model)
        if self._evaluate is None:
            assert self.val_data is not None
            return self.trainer.counterfactuals(iter_batches(self.val_data, self.device), slots)
        out = {}
        for slot in slots:
            with slot.force_alpha(0.0), torch.no_grad():
                out[slot.slot_id] = accuracy - float(self._evaluate(self.model))
        return out

    def evaluate(self) -> tuple[float | None, float]:
        """Validation loss (None with a user ``evaluate``) and accuracy of the model as it is now."""
        return self._validate()

    # ----------------------------------------------------------------- state
    def effective_budget_ok(self) -> bool:
        budget = self.config.max_seed_params
        return budget is None or self.model.active_seed_params <= budget

    def remember_good_state(self) -> None:
        """Take the current state as the governor's rollback point (after editing the model
        from outside, e.g. loading pre-trained host weights)."""
        self._good_state = self._capture()

    def _capture(self) -> dict[str, Any]:
        """Everything needed to continue from here (deep copies: tensors and primitives only)."""
        return copy.deepcopy(
            {
                "epoch": self.epoch,
                "model_config": self.model.config(),
                "model": self.model.state_dict(),
                "trainer": self.trainer.state_dict(),
                "governor": self.governor.state_dict(),
                "history": self.history,
                "counters": self.counters,
                "wall_time_s": self.wall_time_s,
                "train_flops": self.train_flops,
            }
        )

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(state["trainer"])
        self.governor.load_state_dict(state["governor"])
        self.history = [dict(h) for h in state["history"]]
        self.counters = dict(state["counters"])
        self.wall_time_s = float(state["wall_time_s"])
        self.train_flops = float(state.get("train_flops", 0.0))
        self._flops_per_example = None
        self.epoch = int(state["epoch"])
        self._rewire()

    def state_dict(self) -> dict[str, Any]:
        """The run's state at this epoch boundary (tensors and primitives; the data's own RNG
        included). Reuses the rollback snapshot of this epoch when there is one."""
        fresh = self._good_state["epoch"] == self.epoch
        state = dict(self._good_state) if fresh else self._capture()
        state["data_rng"] = data_rng_state(self.train_data)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (into an engine built like the one that saved it)."""
        self._restore(copy.deepcopy({k: v for k, v in state.items() if k != "data_rng"}))
        load_data_rng_state(self.train_data, list(state.get("data_rng", [])))
        self._good_state = self._capture()

    # ----------------------------------------------------------------- reporting
    @property
    def host_params(self) -> int:
        return sum(p.numel() for p in self.model.get_host_parameters())

    @property
    def output_seed_params(self) -> int:
        """Parameters of the seeds that shape the model's output (BLENDING, HOLDING, FOSSILIZED):
        the final model's seeds. GERMINATED/TRAINING seeds leave the output unchanged."""
        return sum(s.seed_params for s in self.model.slots() if s.stage in OUTPUT_STAGES)

    def _emit_epoch_end(self) -> None:
        last = self.history[-1]
        seeds = {
            s.slot_id: SeedSnapshot(
                stage=s.stage,
                alpha=s.alpha,
                blueprint=s.state.blueprint_id or "",
                contribution=s.state.metrics.counterfactual_contribution,
                params=s.seed_params,
            )
            for s in self.model.slots()
            if s.seed is not None
        }
        self._emit(
            EpochEnd(
                epoch=self.epoch,
                **last,
                total_params=self.host_params + self.model.active_seed_params,
                seed_params=self.model.active_seed_params,
                lr=self.groups.lr(),
                wall_time_s=round(self.wall_time_s, 3),
                train_flops=self.train_flops,
                seeds=seeds,
            )
        )

    def _emit(self, event: Event) -> None:
        self.telemetry.emit(event)

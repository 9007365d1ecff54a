"""The Tolaria engine: a host training run in which a controller grows seeds, one epoch at a time.

Protocol (torchtune style): ``Engine(config, controller, run_dir)`` -> ``setup()`` (fresh) or
``resume()`` -> ``run()`` -> summary. Each epoch: train, evaluate, measure counterfactuals,
feed the slots, ``step_epoch()``, ask the controller, apply its action, checkpoint.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

import torch

from esper.data import Task, get_task
from esper.errors import CheckpointError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.gates import QualityGates
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.events import EpochEnd, Event, Rollback, RunFinished, RunStarted, SeedSnapshot
from esper.leyline.observation import Policy
from esper.leyline.stages import SeedStage
from esper.nissa.telemetry import Telemetry
from esper.tolaria.amp import resolve_amp, resolve_device
from esper.tolaria.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from esper.tolaria.config import RunConfig
from esper.tolaria.export import InputSpec
from esper.tolaria.governor import Governor
from esper.tolaria.lifecycle import apply_action, diff_events, observe, snapshot_slots
from esper.tolaria.trainer import Trainer, counterfactual_slots

__all__ = ["Engine"]


class Engine:
    """Runs one morphogenetic training run.

    Args:
        config: the resolved run config.
        controller: the policy that decides one lifecycle action per epoch.
        run_dir: where the checkpoint goes.
        telemetry: where events go (sinks decide what is printed or written).
        task: a prebuilt task (default: built from the config).
    """

    def __init__(
        self,
        config: RunConfig,
        controller: Policy,
        run_dir: str | Path,
        telemetry: Telemetry | None = None,
        task: Task | None = None,
    ) -> None:
        self.config = config
        self.controller = controller
        self.run_dir = Path(run_dir)
        self.telemetry = telemetry or Telemetry()
        self.task = task or get_task(
            config.task, data_dir=config.data_dir, text_file=config.text_file, batch_size=config.batch_size
        )
        self.device = resolve_device(config.device)
        self.amp = resolve_amp(config.amp, self.device)
        self.epochs = config.epochs or self.task.default_epochs
        self.blueprints = tuple(config.blueprints or ())
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []
        self.counters = {"seeds_germinated": 0, "seeds_fossilized": 0, "seeds_pruned": 0}
        self.wall_time_s = 0.0
        self.governor = Governor(
            config.governor_spike_factor, config.governor_spike_margin, config.governor_window
        )
        self._good_state: dict[str, Any] | None = None
        self.model: MorphogeneticModel
        self.trainer: Trainer

    def resolved_config(self) -> RunConfig:
        """The config with every default filled in (what config.json records)."""
        return self.config.replace(
            epochs=self.epochs,
            lr=self.trainer.optimizers.lr,
            batch_size=self.task.batch_size,
            device=str(self.device),
            amp=self.amp,
            blueprints=list(self._available_blueprints()),
        )

    # ----------------------------------------------------------------- setup / resume
    def setup(self) -> None:
        """Build a fresh host, model and optimizers from the seed."""
        _seed_everything(self.config.seed)
        host = self.task.make_host()
        gates = QualityGates(
            min_training_epochs=self.config.min_training_epochs,
            min_holding_epochs=self.config.min_holding_epochs,
            embargo_epochs=self.config.embargo_epochs,
        )
        self.model = MorphogeneticModel(host, slots=self.config.slots, gates=gates).to(self.device)  # type: ignore[arg-type]
        self.trainer = Trainer(
            self.model,
            loss_fn=self.task.loss,
            correct_fn=self.task.correct,
            device=self.device,
            amp=self.amp,
            lr=self.config.lr or self.task.default_lr,
            weight_decay=self.config.weight_decay,
            grad_clip=self.config.grad_clip,
        )
        if self.config.compile:
            compiled = torch.compile(self.model, backend=self.config.compile_backend)
            self.trainer.forward_model = compiled  # type: ignore[assignment]
        self._good_state = self._capture()

    def resume(self) -> None:
        """Set up, then restore everything from ``run_dir/checkpoint.pt``."""
        data = load_checkpoint(self.run_dir / CHECKPOINT_NAME, map_location=self.device)
        self.setup()
        try:
            self._restore(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint in {str(self.run_dir)!r} does not fit this run: {exc}"
            ) from exc
        _set_rng_state(data["rng"])
        self._good_state = self._capture()

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train until ``epochs`` are done; returns the summary."""
        self._emit(
            RunStarted(
                epoch=self.epoch,
                config=self.resolved_config().to_dict(),  # what config.json records
                task=self.task.name,
                controller=self.controller.name,
                seed=self.config.seed,
                device=str(self.device),
                host_params=_host_params(self.model),
            )
        )
        while self.epoch < self.epochs:
            start = time.perf_counter()
            self.run_epoch()
            self.wall_time_s += time.perf_counter() - start
            if self.epoch % self.config.checkpoint_every == 0 or self.epoch == self.epochs:
                self.save()
        summary = self.summary()
        self._emit(RunFinished(epoch=self.epoch, summary=summary))
        return summary

    def run_epoch(self) -> None:
        """One host epoch and the controller's decision after it."""
        epoch, model, trainer = self.epoch, self.model, self.trainer
        before = snapshot_slots(model)
        generator = torch.Generator().manual_seed(_epoch_seed(self.config.seed, epoch))
        train = trainer.train_epoch(self.task.train_batches(generator, self.device))
        verdict = self.governor.verdict(train.loss)
        rolled_back = False
        if verdict is not None:
            self._rollback(verdict)
            # Emit the prune now: after step_epoch() the slot is already EMBARGOED.
            rolled_back = self._emit_changes(before)
            before = snapshot_slots(model)
        else:
            self.governor.accept(train.loss)
        val = trainer.evaluate(self.task.val_batches(self.device))
        for sid, c in trainer.counterfactuals(
            self.task.val_batches(self.device), counterfactual_slots(model)
        ).items():
            model.slot(sid).record_contribution(c)
        self.history.append(
            {
                "train_loss": train.loss,
                "train_accuracy": train.accuracy,
                "val_loss": val.loss,
                "val_accuracy": val.accuracy,
            }
        )
        for slot in model.slots():
            slot.step_epoch()
        structural = self._emit_changes(before) or rolled_back
        if verdict is None:
            middle = snapshot_slots(model)
            self._decide()
            structural = self._emit_changes(middle) or structural
        if structural and self.config.compile:
            # Every structural change is a Dynamo recompile; resetting keeps the cache from
            # hitting recompile_limit (after which compiled code silently falls back to eager).
            torch._dynamo.reset()
        self._emit_epoch_end()
        self.epoch += 1
        # After a rollback too: the restored, pruned state is good, and the next rollback must
        # not send the run back to an older epoch.
        self._good_state = self._capture()

    def _decide(self) -> None:
        obs = observe(
            self.model,
            epoch=self.epoch,
            max_epochs=self.epochs,
            history=self.history,
            max_seed_params=self.config.max_seed_params,
            blueprints=self._available_blueprints(),
        )
        action = self.controller.decide(obs)
        apply_action(self.model, action)
        self.trainer.optimizers.sync(self.model)

    def _available_blueprints(self) -> tuple[str, ...]:
        return self.blueprints or tuple(BlueprintRegistry.names(self.model.topology))

    def _emit_changes(self, before: dict[str, Any]) -> bool:
        """Emit events for slot changes since ``before``; True if any was structural."""
        events = diff_events(self.model, before, self.epoch)
        for event in events:
            counter = _COUNTED.get(event.EVENT)
            if counter is not None:
                self.counters[counter] += 1
            self._emit(event)
        return any(e.EVENT != "alpha_changed" for e in events)

    def _rollback(self, reason: str) -> None:
        """Restore the last good state and prune the seed(s) that were blending."""
        assert self._good_state is not None
        restored_epoch = self._good_state["epoch"]
        timeline = (self.epoch, self.wall_time_s)
        self._restore(copy.deepcopy(self._good_state))
        self.epoch, self.wall_time_s = timeline  # the weights go back; the run's clock does not
        pruned = None
        for slot in self.model.slots():
            if slot.stage == SeedStage.BLENDING:
                slot.prune(f"rollback: {reason}")
                pruned = slot.slot_id
        self.trainer.optimizers.sync(self.model)
        self.governor.rollbacks += 1
        self._emit(
            Rollback(epoch=self.epoch, reason=reason, restored_epoch=restored_epoch, pruned_slot=pruned)
        )

    # ----------------------------------------------------------------- state
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
                "controller": self.controller.state_dict(),
                "governor": self.governor.state_dict(),
                "history": self.history,
                "counters": self.counters,
                "wall_time_s": self.wall_time_s,
            }
        )

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(state["trainer"])
        self.controller.load_state_dict(state["controller"])
        self.governor.load_state_dict(state["governor"])
        self.history = [dict(h) for h in state["history"]]
        self.counters = dict(state["counters"])
        self.wall_time_s = float(state["wall_time_s"])
        self.epoch = int(state["epoch"])
        if self.config.compile:
            torch._dynamo.reset()

    def save(self) -> Path:
        """Write ``checkpoint.pt`` atomically (model, optimizers, scaler, controller, RNG, config).

        Reuses the governor's snapshot of this epoch when there is one (no second deep copy).
        """
        fresh = self._good_state is not None and self._good_state["epoch"] == self.epoch
        payload = dict(self._good_state) if fresh and self._good_state is not None else self._capture()
        payload["config"] = self.config.to_dict()
        payload["rng"] = _rng_state()
        payload["input_spec"] = InputSpec.of_task(self.task).to_dict()  # export needs no dataset
        return save_checkpoint(self.run_dir / CHECKPOINT_NAME, payload)

    # ----------------------------------------------------------------- reporting
    def summary(self) -> dict[str, Any]:
        vals = [h["val_accuracy"] for h in self.history]
        return {
            "task": self.task.name,
            "controller": self.controller.name,
            "epochs": self.epoch,
            "seed": self.config.seed,
            "final_val_accuracy": vals[-1] if vals else None,
            "best_val_accuracy": max(vals) if vals else None,
            "final_val_loss": self.history[-1]["val_loss"] if self.history else None,
            "host_params": _host_params(self.model),
            "seed_params": self.model.active_seed_params,
            "total_params": _host_params(self.model) + self.model.active_seed_params,
            **self.counters,
            "rollbacks": self.governor.rollbacks,
            "wall_time_s": round(self.wall_time_s, 3),
            "device": str(self.device),
            "amp": self.amp,
        }

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
                total_params=_host_params(self.model) + self.model.active_seed_params,
                seed_params=self.model.active_seed_params,
                lr=self.trainer.optimizers.param_groups_lr(),
                wall_time_s=round(self.wall_time_s, 3),
                seeds=seeds,
            )
        )

    def _emit(self, event: Event) -> None:
        self.telemetry.emit(event)


_COUNTED = {
    "seed_germinated": "seeds_germinated",
    "seed_pruned": "seeds_pruned",
    "seed_fossilized": "seeds_fossilized",
}


def _host_params(model: MorphogeneticModel) -> int:
    return sum(p.numel() for p in model.get_host_parameters())


def _epoch_seed(seed: int, epoch: int) -> int:
    """A per-epoch data seed: resuming at any epoch boundary draws the same batches."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    state["python_version"] = random.getstate()[0]
    state["python_gauss"] = random.getstate()[2]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

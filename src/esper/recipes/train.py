"""A whole training run in one call: run directory, sinks, engine, controller, summary and report.

The loop is the engine's three calls; the recipe adds what a run leaves on disk:
``config.json``, ``events.jsonl``, ``metrics.csv``, ``checkpoint.pt`` (every
``checkpoint_every`` epochs, atomically), ``summary.json`` and ``report.png``.

The end of a run is decided explicitly: the summary's metrics are those of the final model
(validated after the last decision), whose seeds are the ones that shape its output
(BLENDING, HOLDING at their alpha, FOSSILIZED) — exactly what ``esper export`` writes and
``load_grown`` computes; a seed still GERMINATED or TRAINING leaves the output unchanged and
is not counted.

Under ``torchrun`` every rank runs this recipe (:func:`distributed_session`): each trains its
shard, and rank 0 alone writes the run directory; the others keep no file sinks.
"""

from __future__ import annotations

import contextlib
import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from esper.data import Task, get_task
from esper.errors import CheckpointError, ConfigError
from esper.karn.report import write_report
from esper.leyline.events import RunFinished, RunStarted
from esper.leyline.observation import Policy
from esper.nissa.io import atomic_write_text
from esper.nissa.telemetry import Sink, Telemetry
from esper.recipes.byom import (
    DEFAULT_EPOCHS,
    UserRun,
    absolute_factory_paths,
    engine_for_user_run,
    prepare_user_run,
    run_label,
)
from esper.recipes.run_dir import RunDir
from esper.recipes.sinks import run_sinks
from esper.tolaria.build import engine_for_task
from esper.tolaria.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from esper.tolaria.config import RESUMABLE, RunConfig
from esper.tolaria.distributed import Communicator, Launch, check_world_size, distributed_session
from esper.tolaria.engine import Engine
from esper.tolaria.export import InputSpec

__all__ = ["config_from_checkpoint", "default_run_dir", "run_engine", "run_training", "summarize"]


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<timestamp>-<task>-<controller>`` (the task: ``module.factory`` of a ``--model``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = config.task if config.model is None else run_label(config.model)
    return Path("runs") / f"{stamp}-{name}-{config.controller}"


def config_from_checkpoint(run_dir: str | Path, **overrides: Any) -> RunConfig:
    """The run config saved in ``run_dir``'s checkpoint, with ``overrides`` applied."""
    data = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    try:
        saved = dict(data["config"])
    except KeyError as exc:
        raise CheckpointError(f"checkpoint in {str(run_dir)!r} holds no run config") from exc
    return RunConfig.from_mapping({**saved, **{k: v for k, v in overrides.items() if v is not None}})


def run_training(
    config: RunConfig,
    controller: Policy,
    *,
    resume: bool = False,
    extra_sinks: list[Sink] | None = None,
) -> dict[str, Any]:
    """Train one run and return its summary; everything it leaves is in ``config.out``.

    The run folder is a :class:`~esper.recipes.run_dir.RunDir` of kind ``"train"``: a fresh
    run refuses a folder that holds any Esper file, the folder is locked while training, and a
    resume refuses settings outside :data:`~esper.tolaria.config.RESUMABLE` (the world size
    included). A resume of a run killed after its last epoch but before its summary writes the
    summary and report. Launched with several ranks (``torchrun``), it trains data-parallel:
    rank 0 holds and writes the folder (``extra_sinks`` are rank 0's), the others never touch it.
    """
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if resume and not (run_dir / CHECKPOINT_NAME).is_file():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT_NAME} in {str(run_dir)!r}")
    launch = Launch.from_env()
    config = absolute_factory_paths(config.replace(out=str(run_dir), world_size=launch.world_size))
    source = _source(config)  # built and checked before the run directory exists
    if isinstance(source, Task):
        check_world_size(-(-source.n_train // source.batch_size), launch.world_size, f"task {source.name!r}")
    elif launch.world_size > 1:
        raise ConfigError(
            f"--model runs train in one process for now (torchrun gave WORLD_SIZE={launch.world_size}); "
            f"launch it without torchrun, or use a built-in --task"
        )
    saved = load_checkpoint(run_dir / CHECKPOINT_NAME) if resume else None
    with (
        _run_folder(run_dir, config, resume, launch) as folder,
        distributed_session(config.device, launch) as comm,
    ):
        return _train(config, source, controller, comm, folder, saved, extra_sinks or [])


def _run_folder(
    run_dir: Path, config: RunConfig, resume: bool, launch: Launch
) -> AbstractContextManager[RunDir | None]:
    """Rank 0 checks, locks and marks the run folder; the other ranks never touch it."""
    if launch.rank != 0:
        return contextlib.nullcontext()
    return RunDir.open(run_dir, kind="train", resume=resume, config=config.to_dict(), resumable=RESUMABLE)


def _train(
    config: RunConfig,
    source: Task | UserRun,
    controller: Policy,
    comm: Communicator,
    folder: RunDir | None,
    saved: dict[str, Any] | None,
    extra_sinks: list[Sink],
) -> dict[str, Any]:
    """The run on this rank; with ``folder`` (rank 0) also everything it leaves on disk."""
    run_dir = Path(str(config.out))
    sinks: list[Sink] = []
    if folder is not None:
        epochs = config.epochs or (source.default_epochs if isinstance(source, Task) else DEFAULT_EPOCHS)
        resume, quiet, tensorboard = folder.resume, config.quiet, config.tensorboard
        sinks = run_sinks(run_dir, resume=resume, quiet=quiet, tensorboard=tensorboard, total_epochs=epochs)
        sinks += extra_sinks
    with Telemetry(sinks) as telemetry:
        if isinstance(source, Task):
            engine = engine_for_task(config, source, telemetry, comm)
        else:
            engine = engine_for_user_run(config, source, telemetry)
        resolved = resolve_config(config, engine, source)
        if folder is not None:
            folder.record_resolved(resolved.to_dict())
            atomic_write_text(run_dir / "config.json", json.dumps(resolved.to_dict(), indent=2) + "\n")
        if saved is not None:
            restore(engine, controller, saved, run_dir)
        summary = run_engine(engine, controller, resolved, source, run_dir)
    summary["run_dir"] = str(run_dir)
    summary["torch_threads"] = torch.get_num_threads()  # results depend on it
    if folder is not None:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_report(run_dir)
    return summary


def _source(config: RunConfig) -> Task | UserRun:
    """What the run trains: one of Esper's tasks, or the user's model and data (``config.model``)."""
    return prepare_user_run(config) if config.model is not None else task_of(config)


def task_of(config: RunConfig) -> Task:
    """The task a run config names, with its options (data folder, text, batch, host width)."""
    return get_task(
        config.task,
        data_dir=config.data_dir,
        text_file=config.text_file,
        batch_size=config.batch_size,
        host_channels=config.host_channels,
    )


def resolve_config(config: RunConfig, engine: Engine, task: Task | UserRun) -> RunConfig:
    """The config with every default filled in (what config.json records)."""
    return config.replace(
        epochs=engine.config.epochs,
        lr=engine.config.lr,
        batch_size=task.batch_size if isinstance(task, Task) else None,
        device=str(engine.device),
        amp=engine.config.amp,
        blueprints=list(engine.blueprints),
    )


def restore(engine: Engine, controller: Policy, saved: dict[str, Any], run_dir: Path) -> None:
    """Continue from a checkpoint: engine, controller, then the global RNG."""
    try:
        engine.load_state_dict(saved)
        controller.load_state_dict(saved["controller"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint in {str(run_dir)!r} does not fit this run: {exc}") from exc
    set_rng_state(saved["rng"])


def run_engine(
    engine: Engine, controller: Policy, config: RunConfig, task: Task | UserRun, run_dir: Path
) -> dict[str, Any]:
    """The loop: the engine's three calls per epoch, checkpoints, then the summary."""
    engine.telemetry.emit(
        RunStarted(
            epoch=engine.epoch,
            config=config.to_dict(),
            task=task.name,
            controller=controller.name,
            seed=config.seed,
            device=str(engine.device),
            host_params=engine.host_params,
        )
    )
    epochs, every = engine.config.epochs, config.checkpoint_every
    # export needs no dataset
    spec = (InputSpec.of_task(task) if isinstance(task, Task) else task.spec).to_dict()
    while engine.epoch < epochs:
        engine.train_epoch()
        engine.ask(controller)
        if engine.comm.is_main and (engine.epoch % every == 0 or engine.epoch == epochs):
            save(engine, controller, config, spec, run_dir / CHECKPOINT_NAME)
    summary = summarize(engine, task.name, controller.name, config.seed)
    engine.telemetry.emit(RunFinished(epoch=engine.epoch, summary=summary))
    return summary


def save(engine: Engine, controller: Policy, config: RunConfig, spec: dict[str, Any], path: Path) -> Path:
    """Write everything a resume needs, atomically."""
    payload = {
        **engine.state_dict(),
        "controller": controller.state_dict(),
        "config": config.to_dict(),
        "rng": rng_state(),
        "input_spec": spec,
    }
    return save_checkpoint(path, payload)


def summarize(engine: Engine, task: str, controller: str, seed: int) -> dict[str, Any]:
    """The run's summary; the final metrics are the final model's (see the module docstring)."""
    vals = [h["val_accuracy"] for h in engine.history]
    final_loss, final_acc = engine.evaluate() if engine.history else (None, None)
    return {
        "task": task,
        "controller": controller,
        "epochs": engine.epoch,
        "seed": seed,
        "final_val_accuracy": final_acc,
        "best_val_accuracy": max(vals) if vals else None,
        "final_val_loss": final_loss,
        "host_params": engine.host_params,
        "seed_params": engine.output_seed_params,
        "total_params": engine.host_params + engine.output_seed_params,
        **engine.counters,
        "rollbacks": engine.governor.rollbacks,
        "wall_time_s": round(engine.wall_time_s, 3),
        "train_flops": engine.train_flops,
        "device": str(engine.device),
        "amp": engine.config.amp,
        "world_size": engine.comm.world_size,
    }

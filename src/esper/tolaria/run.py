"""A whole run in one call: run directory, sinks, engine, summary and report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from esper.errors import CheckpointError, ConfigError
from esper.karn.console import ConsoleSink
from esper.karn.report import write_report
from esper.leyline.observation import Policy
from esper.nissa.csv_sink import CsvMetricsSink
from esper.nissa.io import atomic_write_text
from esper.nissa.jsonl import JsonlSink
from esper.nissa.telemetry import Sink, Telemetry
from esper.tolaria.checkpoint import CHECKPOINT_NAME, load_checkpoint
from esper.tolaria.config import RunConfig
from esper.tolaria.engine import Engine

__all__ = ["config_from_checkpoint", "default_run_dir", "run_training"]


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<timestamp>-<task>-<controller>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.task}-{config.controller}"


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

    A fresh run refuses a directory that already holds a checkpoint (use ``resume``). The run
    directory gets ``config.json``, ``events.jsonl``, ``metrics.csv``, ``checkpoint.pt``,
    ``summary.json`` and ``report.png`` (and ``tensorboard/`` with ``config.tensorboard``).
    """
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if resume and not (run_dir / CHECKPOINT_NAME).is_file():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT_NAME} in {str(run_dir)!r}")
    if not resume and (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"{str(run_dir)!r} already holds a run; pass --resume {run_dir} to continue it "
            f"or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(config.replace(out=str(run_dir)), controller, run_dir)
    if resume:
        engine.resume()
    else:
        engine.setup()
    resolved = engine.resolved_config()
    atomic_write_text(run_dir / "config.json", json.dumps(resolved.to_dict(), indent=2) + "\n")
    with Telemetry(_sinks(resolved, run_dir, resume, engine.epochs) + list(extra_sinks or [])) as telemetry:
        engine.telemetry = telemetry
        summary = engine.run()
    summary["run_dir"] = str(run_dir)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_report(run_dir)
    return summary


def _sinks(config: RunConfig, run_dir: Path, resume: bool, epochs: int) -> list[Sink]:
    sinks: list[Sink] = [
        JsonlSink(run_dir / "events.jsonl", append=resume),
        CsvMetricsSink(run_dir / "metrics.csv", resume=resume and (run_dir / "metrics.csv").exists()),
    ]
    if not config.quiet:
        sinks.append(ConsoleSink(total_epochs=epochs))
    if config.tensorboard:
        from esper.nissa.tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    return sinks

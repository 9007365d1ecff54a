"""The sinks a run directory gets: events to JSONL, epoch metrics to CSV, the console, TensorBoard."""

from __future__ import annotations

from pathlib import Path

from esper.karn.console import ConsoleSink
from esper.nissa.csv_sink import CsvMetricsSink
from esper.nissa.jsonl import JsonlSink
from esper.nissa.telemetry import Sink

__all__ = ["run_sinks"]


def run_sinks(
    run_dir: Path, *, resume: bool, quiet: bool, tensorboard: bool, total_epochs: int, csv: bool = True
) -> list[Sink]:
    """``events.jsonl`` (+ ``metrics.csv``), a console view unless ``quiet``, and TensorBoard.

    On ``resume`` the files are appended to, not replaced.
    """
    sinks: list[Sink] = [JsonlSink(run_dir / "events.jsonl", append=resume)]
    if csv:
        sinks.append(
            CsvMetricsSink(run_dir / "metrics.csv", resume=resume and (run_dir / "metrics.csv").exists())
        )
    if not quiet:
        sinks.append(ConsoleSink(total_epochs=total_epochs))
    if tensorboard:
        from esper.nissa.tensorboard import TensorBoardSink  # optional dependency

        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    return sinks

"""Telemetry: typed events and their sinks (JSONL, CSV, TensorBoard, console)."""

from esper.nissa.csv_sink import CsvMetricsSink, MetricsFileError
from esper.nissa.io import atomic_write_bytes, atomic_write_text
from esper.nissa.jsonl import EventLogError, JsonlSink, read_events
from esper.nissa.scalars import Scalar, epoch_scalars, flatten, ppo_scalars, reward_scalars
from esper.nissa.telemetry import MemorySink, Sink, Telemetry
from esper.nissa.tensorboard import TensorBoardSink

__all__ = [
    "CsvMetricsSink",
    "EventLogError",
    "JsonlSink",
    "MemorySink",
    "MetricsFileError",
    "Scalar",
    "Sink",
    "Telemetry",
    "TensorBoardSink",
    "atomic_write_bytes",
    "atomic_write_text",
    "epoch_scalars",
    "flatten",
    "ppo_scalars",
    "read_events",
    "reward_scalars",
]

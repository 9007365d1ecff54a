"""Compare runs: a table of their summaries and one plot of their validation accuracy."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from esper.karn.console import format_count
from esper.karn.history import RunDirError, load_history
from esper.karn.report import figure_png
from esper.nissa.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "SUMMARY_KEYS",
    "compare_runs",
    "comparison_figure",
    "format_comparison_table",
    "write_comparison_plot",
]

SUMMARY_KEYS: tuple[str, ...] = (
    "task",
    "controller",
    "epochs",
    "final_val_accuracy",
    "best_val_accuracy",
    "total_params",
    "host_params",
    "seed_params",
    "seeds_germinated",
    "seeds_fossilized",
    "seeds_pruned",
    "wall_time_s",
    "train_flops",
)
"""The summary.json keys a comparison shows (a key a run lacks shows as ``-``)."""


def _read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(
            f"run dir {os.fspath(run_dir)!r} has no summary.json (did the run finish?)"
        ) from None
    except (ValueError, OSError) as err:
        raise RunDirError(f"run dir {os.fspath(run_dir)!r}: unreadable summary.json ({err})") from err
    if not isinstance(summary, dict):
        raise RunDirError(
            f"run dir {os.fspath(run_dir)!r}: summary.json holds a {type(summary).__name__},"
            " expected a JSON object"
        )
    return summary


def compare_runs(run_dirs: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """One row per run: ``run`` (the dir name), ``run_dir`` and the :data:`SUMMARY_KEYS`.

    Raises:
        RunDirError: a run's summary.json is missing or corrupted (the message names the dir).
    """
    rows = []
    for run_dir in map(Path, run_dirs):
        summary = _read_summary(run_dir)
        row: dict[str, Any] = {"run": run_dir.name, "run_dir": os.fspath(run_dir)}
        row.update({key: summary.get(key) for key in SUMMARY_KEYS})
        rows.append(row)
    return rows


_HEADERS = {
    "final_val_accuracy": "final acc",
    "best_val_accuracy": "best acc",
    "host_params": "host params",
    "seed_params": "seed params",
    "seeds_germinated": "germinated",
    "seeds_fossilized": "fossilized",
    "seeds_pruned": "pruned",
    "total_params": "params",
    "wall_time_s": "wall time",
    "train_flops": "train FLOPs",
}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.endswith("accuracy") and isinstance(value, float):
        return f"{value:.4f}"
    if key.endswith("params") and isinstance(value, int | float):
        return format_count(value)
    if key == "wall_time_s" and isinstance(value, int | float):
        return f"{value:.1f}s"
    if key == "train_flops" and isinstance(value, int | float):
        return f"{value:.3g}"
    return str(value)


def format_comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`compare_runs` rows (no colour codes), one line per run."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    keys = ("run", *SUMMARY_KEYS)
    for key in keys:
        numeric = key not in ("run", "task", "controller")
        header = _HEADERS.get(key, key)
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(key, row.get(key)) for key in keys))
    buffer = io.StringIO()
    Console(file=buffer, width=400, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def comparison_figure(run_dirs: Iterable[str | os.PathLike[str]]) -> Figure:
    """Validation accuracy (top) and total parameters (bottom) of each run over epochs.

    Each run's label carries its controller and final parameter count.

    Raises:
        RunDirError: a run's events.jsonl is missing or corrupted.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 8), layout="constrained")
    ax_acc, ax_params = fig.subplots(2, 1, sharex=True)
    for run_dir in map(Path, run_dirs):
        history = load_history(run_dir)
        series = history.series()
        start = history.run_started
        label = run_dir.name + (f" ({start.controller})" if start else "")
        if series:
            label += f", {format_count(series[-1].total_params)} params"
        xs = [e.epoch for e in series]
        ax_acc.plot(xs, [e.val_accuracy for e in series], marker=".", label=label)
        ax_params.plot(xs, [e.total_params for e in series], marker=".", label=label)
    ax_acc.set_ylabel("val accuracy")
    ax_params.set_ylabel("parameters")
    ax_params.set_xlabel("epoch")
    for ax in (ax_acc, ax_params):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return fig


def write_comparison_plot(
    run_dirs: Iterable[str | os.PathLike[str]], out_path: str | os.PathLike[str]
) -> Path:
    """Write :func:`comparison_figure` of the runs into ``out_path`` (atomically).

    Raises:
        RunDirError: a run's events.jsonl is missing or corrupted.
    """
    return atomic_write_bytes(out_path, figure_png(comparison_figure(run_dirs)))

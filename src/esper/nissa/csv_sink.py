"""metrics.csv: one row per epoch, one column per slash-namespaced metric."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from esper.errors import EsperError
from esper.leyline.events import EpochEnd, Event
from esper.nissa.io import atomic_write_text
from esper.nissa.scalars import Scalar, epoch_scalars

__all__ = ["CsvMetricsSink", "MetricsFileError"]


class MetricsFileError(EsperError, ValueError):
    """An existing metrics.csv that cannot be resumed from."""


def _cell(value: Scalar) -> str:
    """CSV text of a value: empty for None, full precision for floats."""
    return "" if value is None else str(value)


class CsvMetricsSink:
    """Writes ``epoch_end`` events to a CSV file, one row per epoch; other events are ignored.

    Columns appear as they are first seen (a seed germinated at epoch 10 adds its
    ``seed/<slot>/...`` columns then; earlier rows leave them empty). Because the header can
    grow, rows are kept in memory and the whole file is rewritten atomically after each epoch,
    so the file on disk is always complete. An epoch that is already in the table (a run
    resumed or rolled back to an earlier epoch) replaces that row and drops the rows after it.

    Args:
        path: the CSV file.
        resume: start from the rows of an existing file (nothing if there is none).
    """

    def __init__(self, path: str | os.PathLike[str], resume: bool = False) -> None:
        self.path = Path(path)
        self._columns: list[str] = []
        self._rows: list[dict[str, str]] = []
        if resume and self.path.exists():
            self._load()

    @property
    def columns(self) -> list[str]:
        """The header, in order of first appearance."""
        return list(self._columns)

    @property
    def rows(self) -> list[dict[str, str]]:
        """The rows as CSV text cells (a missing column reads as absent)."""
        return [dict(row) for row in self._rows]

    def _load(self) -> None:
        """Seed the table from the existing file."""
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            self._columns = list(reader.fieldnames or [])
            for line, row in enumerate(reader, start=2):
                if None in row or "epoch" not in row:
                    raise MetricsFileError(
                        f"{self.path}:{line}: row does not match the header {self._columns}; "
                        "delete the file or resume without it."
                    )
                self._rows.append({k: v for k, v in row.items() if v not in ("", None)})

    def emit(self, event: Event) -> None:
        """Add (or replace) the row of an ``epoch_end`` event and rewrite the file."""
        if not isinstance(event, EpochEnd):
            return
        row = {k: _cell(v) for k, v in epoch_scalars(event).items()}
        self._rows = [r for r in self._rows if int(r["epoch"]) < event.epoch]
        self._rows.append(row)
        self._columns += [k for k in row if k not in self._columns]
        self._write()

    def _write(self) -> None:
        """Rewrite the whole file atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self._columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self.path, buffer.getvalue())

    def close(self) -> None:
        """Nothing to flush: the file is complete after every epoch."""

"""metrics.csv: one row per epoch, columns that appear later, atomic rewrites, resume."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from esper.leyline.events import AlphaChanged, EpochEnd, SeedSnapshot
from esper.leyline.stages import SeedStage
from esper.nissa import CsvMetricsSink, MetricsFileError


def _epoch(epoch: int, **seeds: SeedSnapshot) -> EpochEnd:
    return EpochEnd(
        epoch=epoch,
        train_loss=1.0 / epoch,
        train_accuracy=0.5,
        val_loss=0.25,
        val_accuracy=0.1 * epoch,
        total_params=1000,
        seed_params=0,
        lr=0.1,
        wall_time_s=epoch,
        seeds=dict(seeds),
    )


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_rows_and_columns_that_appear_later(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    sink = CsvMetricsSink(path)
    sink.emit(_epoch(1))
    sink.emit(AlphaChanged(epoch=1, slot="r0c1", seed_id="s", alpha=0.5))  # ignored
    sink.emit(_epoch(2, r0c1=SeedSnapshot(stage=SeedStage.BLENDING, alpha=0.4, blueprint="norm")))
    header, rows = _read(path)  # complete on disk before close
    assert header[:5] == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    assert "seed/r0c1/alpha" in header and "seed/r0c1/stage" in header
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["seed/r0c1/alpha"] == ""
    assert rows[1]["seed/r0c1/alpha"] == "0.4"
    assert rows[1]["seed/r0c1/stage"] == "BLENDING"
    assert rows[1]["seed/r0c1/contribution"] == ""  # None
    assert float(rows[0]["train_loss"]) == 1.0 and float(rows[1]["val_accuracy"]) == 0.2
    sink.close()


def test_rewrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.csv"
    sink = CsvMetricsSink(path)
    sink.emit(_epoch(1))
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        sink.emit(_epoch(2))
    assert path.read_bytes() == before  # the old file survives intact
    assert os.listdir(tmp_path) == ["metrics.csv"]  # no temp file left behind


def test_resume_keeps_old_rows_and_replaces_replayed_epochs(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    first = CsvMetricsSink(path)
    seed = SeedSnapshot(stage=SeedStage.TRAINING, alpha=0.0, blueprint="lora")
    for epoch in (1, 2, 3):
        first.emit(_epoch(epoch, r0c0=seed))
    first.close()
    resumed = CsvMetricsSink(path, resume=True)  # checkpoint was at epoch 2
    assert [r["epoch"] for r in resumed.rows] == ["1", "2", "3"]
    resumed.emit(_epoch(3))
    resumed.emit(_epoch(4))
    header, rows = _read(path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert "seed/r0c0/stage" in header  # old columns are kept
    assert rows[1]["seed/r0c0/stage"] == "TRAINING" and rows[2]["seed/r0c0/stage"] == ""


def test_resume_without_a_file_starts_empty(tmp_path: Path) -> None:
    sink = CsvMetricsSink(tmp_path / "metrics.csv", resume=True)
    assert sink.rows == [] and sink.columns == []


def test_resume_from_a_malformed_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,val_accuracy\n1,0.5\n2,0.6,extra\n")
    with pytest.raises(MetricsFileError, match=r"metrics\.csv:3"):
        CsvMetricsSink(path, resume=True)

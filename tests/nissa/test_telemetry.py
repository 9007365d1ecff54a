"""Telemetry hub fan-out and atomic file writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from esper.leyline.events import Event, RunFinished
from esper.nissa import MemorySink, Sink, Telemetry, atomic_write_bytes, atomic_write_text


class _FailingClose(MemorySink):
    def close(self) -> None:
        raise RuntimeError("close failed")


def test_fans_out_in_order_and_closes_every_sink() -> None:
    a, b = MemorySink(), MemorySink()
    closed: list[str] = []

    class Recorder(MemorySink):
        def close(self) -> None:
            closed.append("recorder")

    with Telemetry([a]) as telemetry:
        telemetry.add_sink(b)
        telemetry.add_sink(Recorder())
        event: Event = RunFinished(epoch=1)
        telemetry.emit(event)
        assert isinstance(a, Sink)
    assert a.events == b.events == [event]
    assert closed == ["recorder"]
    with pytest.raises(RuntimeError, match="closed"):
        telemetry.emit(event)


def test_close_reaches_every_sink_then_reraises() -> None:
    closed: list[int] = []

    class Tracking(MemorySink):
        def close(self) -> None:
            closed.append(1)

    telemetry = Telemetry([_FailingClose(), Tracking()])
    with pytest.raises(RuntimeError, match="close failed"):
        telemetry.close()
    assert closed == [1]


def test_add_sink_rejects_non_sinks() -> None:
    with pytest.raises(TypeError, match="not a Sink"):
        Telemetry().add_sink(object())  # type: ignore[arg-type]


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"
    os.chmod(path, 0o640)
    assert atomic_write_bytes(path, b"[1]") == path
    assert path.read_bytes() == b"[1]"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["summary.json"]


def test_atomic_write_new_file_is_not_private(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    atomic_write_text(path, "é")
    assert path.read_bytes() == "é".encode()
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600

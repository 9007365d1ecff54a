"""JSON Lines event log: one event per line, flushed as written, readable after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType

from esper.errors import EsperError
from esper.leyline.events import Event, event_from_dict

__all__ = ["EventLogError", "JsonlSink", "read_events"]

_CHUNK = 1 << 16


class EventLogError(EsperError, ValueError):
    """An event log that is corrupted somewhere other than a torn last line."""


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (a run killed mid-write) so that appends start on a fresh line."""
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - _CHUNK)
            f.seek(start)
            chunk = f.read(pos - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        else:
            keep = 0
        if keep != end:
            f.truncate(keep)


class JsonlSink:
    """Writes each event as one JSON object per line and flushes it at once.

    A run killed at any moment leaves a valid log except, at worst, a torn last line, which
    :func:`read_events` skips and ``append=True`` (resume) cuts before writing more.
    Non-finite floats are written as ``NaN``/``Infinity`` (Python's JSON reads them back).
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False) -> None:
        self.path = Path(path)
        if append and self.path.exists():
            _drop_torn_tail(self.path)
        self._file = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def emit(self, event: Event) -> None:
        """Append the event as one line and flush it to the OS.

        Raises:
            EventLogError: the log was deleted while the run was writing it (further lines
                would go into a file no one can read: the run stops, and can be resumed).
        """
        if os.fstat(self._file.fileno()).st_nlink == 0:  # one fstat per event: cheap
            raise EventLogError(
                f"{self.path} was deleted while the run was writing it; the events since then are "
                f"lost. The run's last checkpoint is intact: continue it with --resume"
            )
        self._file.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush, fsync and close the file (idempotent)."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _parse_line(line: bytes) -> Event:
    """One log line -> event; raises ValueError (bad UTF-8 or JSON, or EventDecodeError)."""
    return event_from_dict(json.loads(line.decode("utf-8")))


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """Read a JSONL event log written by :class:`JsonlSink`.

    A last line without its newline that does not parse is a torn write from a killed run and
    is skipped; blank lines are skipped.

    Raises:
        FileNotFoundError: the log does not exist.
        EventLogError: any other line is not a valid event; the message names the line number.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    torn_candidate = len(lines) - 1 if lines[-1] else -1
    events: list[Event] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(_parse_line(line))
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, EventDecodeError
            if index == torn_candidate:
                break
            raise EventLogError(f"{path}:{index + 1}: not a valid event ({err}).") from err
    return events

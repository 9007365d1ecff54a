"""The telemetry hub: code emits typed events once, and every attached sink records them."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Protocol, runtime_checkable

from esper.leyline.events import Event

__all__ = ["MemorySink", "Sink", "Telemetry"]


@runtime_checkable
class Sink(Protocol):
    """Where events go (a file, TensorBoard, the terminal). Sinks never call into training."""

    def emit(self, event: Event) -> None:
        """Record one event."""

    def close(self) -> None:
        """Flush and release resources; no more events follow."""


class MemorySink:
    """Keeps events in a list: for tests and for code that inspects a run in-process."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Append the event."""
        self.events.append(event)

    def close(self) -> None:
        """Nothing to release."""


class Telemetry:
    """Fans each event out to every sink, in the order the sinks were added.

    Use it as a context manager so that sinks are closed (files flushed, the progress bar
    stopped) even when training raises.
    """

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks: list[Sink] = list(sinks)
        self._closed = False

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The attached sinks."""
        return tuple(self._sinks)

    def add_sink(self, sink: Sink) -> None:
        """Attach a sink; it receives every event emitted from now on."""
        if not isinstance(sink, Sink):
            raise TypeError(f"{sink!r} is not a Sink: it needs emit(event) and close().")
        self._sinks.append(sink)

    def emit(self, event: Event) -> None:
        """Send one event to every sink."""
        if self._closed:
            raise RuntimeError(f"Telemetry is closed; cannot emit {event.EVENT!r}.")
        for sink in self._sinks:
            sink.emit(event)

    def close(self) -> None:
        """Close every sink (all of them, even if one fails; the first error is re-raised)."""
        if self._closed:
            return
        self._closed = True
        first_error: BaseException | None = None
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as err:  # keep closing the others, then report
                first_error = first_error or err
        if first_error is not None:
            raise first_error

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""A run's event log folded into series to plot: epochs, lifecycle marks, each seed's alpha."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from esper.errors import EsperError
from esper.leyline.events import (
    AlphaChanged,
    EpochEnd,
    Event,
    Rollback,
    RunStarted,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)
from esper.leyline.stages import SeedStage
from esper.nissa.jsonl import EventLogError, read_events

__all__ = ["RunDirError", "RunHistory", "SeedTrack", "load_history"]


class RunDirError(EsperError, ValueError):
    """A run directory whose events.jsonl or summary.json is missing or corrupted."""


@dataclass(slots=True)
class SeedTrack:
    """One seed's life: its slot, blueprint, alpha per epoch and lifecycle marks.

    ``marks`` holds ``(epoch, kind)`` with kind in germinate / blend / fossilize / prune.
    """

    seed_id: str
    slot: str
    blueprint: str
    alpha: dict[int, float] = field(default_factory=dict)
    marks: list[tuple[int, str]] = field(default_factory=list)

    def alpha_at(self, epoch: int) -> float:
        """Alpha at ``epoch``, or at the last epoch before it that has one (0 before any)."""
        before = [e for e in self.alpha if e <= epoch]
        return self.alpha[max(before)] if before else 0.0

    def mark(self, epoch: int, kind: str) -> None:
        """Record a lifecycle mark once (a resumed run may replay events)."""
        if (epoch, kind) not in self.marks:
            self.marks.append((epoch, kind))


@dataclass(slots=True)
class RunHistory:
    """Everything a report plots. ``epochs`` keeps the last event per epoch (resume, rollback)."""

    run_started: RunStarted | None = None
    epochs: dict[int, EpochEnd] = field(default_factory=dict)
    marks: list[tuple[int, str]] = field(default_factory=list)
    seeds: dict[str, SeedTrack] = field(default_factory=dict)
    _slot_seed: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def series(self) -> list[EpochEnd]:
        """Epoch events in epoch order."""
        return [self.epochs[e] for e in sorted(self.epochs)]

    def _mark(self, epoch: int, kind: str) -> None:
        if (epoch, kind) not in self.marks:
            self.marks.append((epoch, kind))

    def add(self, event: Event) -> None:
        """Fold one event in (events must come in log order)."""
        if isinstance(event, RunStarted):
            self.run_started = event
        elif isinstance(event, EpochEnd):
            self._add_epoch(event)
        elif isinstance(event, SeedGerminated):
            track = self.seeds.setdefault(
                event.seed_id, SeedTrack(event.seed_id, event.slot, event.blueprint)
            )
            self._slot_seed[event.slot] = event.seed_id
            track.mark(event.epoch, "germinate")
            self._mark(event.epoch, "germinate")
        elif isinstance(event, StageChanged | AlphaChanged | SeedFossilized | SeedPruned):
            self._add_seed_event(event)
        elif isinstance(event, Rollback):
            self._mark(event.epoch, "rollback")

    def _add_epoch(self, event: EpochEnd) -> None:
        self.epochs[event.epoch] = event
        for slot, snap in event.seeds.items():
            seed_id = self._slot_seed.get(slot)
            if seed_id is not None:
                self.seeds[seed_id].alpha[event.epoch] = snap.alpha

    def _add_seed_event(self, event: StageChanged | AlphaChanged | SeedFossilized | SeedPruned) -> None:
        track = self.seeds.get(event.seed_id)
        if track is None:  # the log started after this seed germinated (a partial log)
            track = self.seeds[event.seed_id] = SeedTrack(event.seed_id, event.slot, "?")
            self._slot_seed[event.slot] = event.seed_id
        if isinstance(event, AlphaChanged):
            track.alpha[event.epoch] = event.alpha
        elif isinstance(event, StageChanged):
            if event.to_stage == SeedStage.BLENDING:
                track.mark(event.epoch, "blend")
        elif isinstance(event, SeedFossilized):
            track.mark(event.epoch, "fossilize")
            self._mark(event.epoch, "fossilize")
        else:
            track.mark(event.epoch, "prune")
            self._mark(event.epoch, "prune")
            if self._slot_seed.get(event.slot) == event.seed_id:
                del self._slot_seed[event.slot]


def load_history(run_dir: str | os.PathLike[str]) -> RunHistory:
    """Read ``run_dir/events.jsonl`` into a :class:`RunHistory`.

    Raises:
        RunDirError: the log is missing or corrupted (the message names the run dir).
    """
    path = Path(run_dir) / "events.jsonl"
    try:
        events = read_events(path)
    except FileNotFoundError:
        raise RunDirError(
            f"run dir {os.fspath(run_dir)!r} has no events.jsonl; is it a run directory?"
        ) from None
    except EventLogError as err:
        raise RunDirError(f"run dir {os.fspath(run_dir)!r}: {err}") from err
    history = RunHistory()
    for event in events:
        history.add(event)
    return history

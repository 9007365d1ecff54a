"""A live terminal view of a run: a progress bar, one status line per epoch, lifecycle events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from esper.leyline.events import (
    ActorRestarted,
    EpochEnd,
    Event,
    PPOUpdate,
    Rollback,
    RunFinished,
    RunStarted,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)

__all__ = ["ConsoleSink", "format_count", "format_event"]

_SUMMARY_KEYS = ("final_val_accuracy", "best_val_accuracy", "seeds_fossilized", "wall_time_s")
_PPO_KEYS = (
    "mean_return",
    "final_accuracy",
    "policy_loss",
    "value_loss",
    "approx_kl",
    "clipfrac",
    "explained_variance",
    "steps_per_s",
)


def format_count(n: float) -> str:
    """A parameter count for people: 950, 12.3k, 4.56M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:g}"


def _num(value: Any) -> str:
    """A metric value in a status line."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _epoch_line(e: EpochEnd, total: int | None) -> str:
    of = f"/{total}" if total else ""
    seeds = "  ".join(
        f"{slot} {s.stage.name} a={s.alpha:.2f} {s.blueprint}" for slot, s in sorted(e.seeds.items())
    )
    return (
        f"epoch {e.epoch}{of}  train_loss {e.train_loss:.4f}  val_loss {e.val_loss:.4f}"
        f"  val_acc {e.val_accuracy:.4f}  params {format_count(e.total_params)}"
        f" (seeds {format_count(e.seed_params)})  lr {e.lr:.3g}" + (f"  | {seeds}" if seeds else "")
    )


def _germinated(e: SeedGerminated) -> str:
    return (
        f"epoch {e.epoch}  + germinate {e.slot} {e.blueprint} (seed {e.seed_id},"
        f" {format_count(e.params)} params, {e.alpha_algorithm.name}/{e.alpha_curve.name},"
        f" tempo {e.tempo})"
    )


def _fossilized(e: SeedFossilized) -> str:
    c = "" if e.contribution is None else f" (contribution {e.contribution:+.4f})"
    return f"epoch {e.epoch}  * fossilize {e.slot} seed {e.seed_id}{c}"


def _rollback(e: Rollback) -> str:
    pruned = f", pruned {e.pruned_slot}" if e.pruned_slot else ""
    return f"epoch {e.epoch}  ! rollback to epoch {e.restored_epoch}: {e.reason}{pruned}"


def _picked(values: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {_num(values[k])}" for k in keys if k in values)


_LINES: dict[type, Callable[[Any], str]] = {
    RunStarted: lambda e: (
        f"run started at epoch {e.epoch}: task {e.task}, controller {e.controller},"
        f" seed {e.seed}, device {e.device}, host params {format_count(e.host_params)}"
    ),
    SeedGerminated: _germinated,
    StageChanged: lambda e: (
        f"epoch {e.epoch}  {e.slot} seed {e.seed_id}: {e.from_stage.name} -> {e.to_stage.name}"
    ),
    SeedPruned: lambda e: (
        f"epoch {e.epoch}  x prune {e.slot} seed {e.seed_id}" + (f": {e.reason}" if e.reason else "")
    ),
    SeedFossilized: _fossilized,
    Rollback: _rollback,
    RunFinished: lambda e: f"run finished at epoch {e.epoch}  {_picked(e.summary, _SUMMARY_KEYS)}",
    PPOUpdate: lambda e: f"ppo round {e.round}  {_picked(e.metrics, _PPO_KEYS)}",
    ActorRestarted: lambda e: (
        f"ppo round {e.round}  ! env {e.env} restarted at step {e.step} (attempt {e.attempt}): {e.reason}"
    ),
}


def format_event(event: Event, total_epochs: int | None = None) -> str | None:
    """The plain-text line shown for an event, or None for events that are not shown
    (``alpha_changed`` and ``reward``: the epoch status line already carries alpha)."""
    if isinstance(event, EpochEnd):
        return _epoch_line(event, total_epochs)
    line = _LINES.get(type(event))
    return line(event).rstrip() if line else None


class ConsoleSink:
    """Shows a run in the terminal; one sink among others, it never decides what is recorded.

    On a terminal it draws an epoch progress bar with the lines scrolling above it; when
    output is not a terminal (a pipe, a log file, CI) it prints plain lines only.

    Args:
        total_epochs: length of the progress bar; if None, taken from the ``epochs`` entry of
            the run config when the run starts.
        quiet: print nothing.
        file: where to write (default stdout); ignored when ``console`` is given.
        console: a rich console to use (tests, or sharing one with other output).
    """

    def __init__(
        self,
        total_epochs: int | None = None,
        *,
        quiet: bool = False,
        file: TextIO | None = None,
        console: Console | None = None,
    ) -> None:
        self.quiet = quiet
        self.total_epochs = total_epochs
        self.console = console or Console(file=file, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._done = 0

    def emit(self, event: Event) -> None:
        """Print the event's line (if it has one) and move the progress bar."""
        if self.quiet:
            return
        if isinstance(event, RunStarted):
            self._on_run_started(event)
        line = format_event(event, self.total_epochs)
        if line is not None:
            self.console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)
        if isinstance(event, EpochEnd):
            self._advance()
        elif isinstance(event, RunFinished):
            self._stop_progress()

    def _on_run_started(self, event: RunStarted) -> None:
        """Learn the run length and where a resumed run starts."""
        epochs = event.config.get("epochs")
        if self.total_epochs is None and isinstance(epochs, int):
            self.total_epochs = epochs
        self._done = event.epoch

    def _advance(self) -> None:
        """One more epoch done: start the bar on the first call (terminals only)."""
        self._done += 1
        if not self.console.is_terminal:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("epochs"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("epochs", total=self.total_epochs, completed=self._done)
            self._progress.start()
        assert self._task is not None
        self._progress.update(self._task, completed=self._done)

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        """Stop the progress bar."""
        self._stop_progress()

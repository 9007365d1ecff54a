"""report.png: accuracy, loss, parameters and each seed's alpha over epochs, with lifecycle marks.

matplotlib is imported when a figure is drawn, not with this module (it takes ~0.3 s).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from esper.karn.history import RunHistory, SeedTrack, load_history
from esper.nissa.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["figure_png", "report_figure", "write_report"]

# kind -> (colour, line style) of the vertical marks on the accuracy panel
_EVENT_LINES = {
    "germinate": ("tab:green", ":"),
    "fossilize": ("tab:blue", "-"),
    "prune": ("tab:red", "--"),
    "rollback": ("black", "-."),
}
# kind -> (marker, label) of the lifecycle marks on the alpha panel
_SEED_MARKERS = {
    "germinate": ("^", "germinate"),
    "blend": ("o", "blend start"),
    "fossilize": ("*", "fossilize"),
    "prune": ("X", "prune"),
}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _plot_accuracy(ax: Axes, history: RunHistory) -> None:
    series = history.series()
    if not series:
        _empty(ax, "no epochs recorded")
    xs = [e.epoch for e in series]
    ax.plot(xs, [e.val_accuracy for e in series], marker=".", label="val accuracy")
    ax.plot(xs, [e.train_accuracy for e in series], ls="--", alpha=0.7, label="train accuracy")
    seen: set[str] = set()
    for epoch, kind in sorted(history.marks):
        colour, style = _EVENT_LINES[kind]
        label = None if kind in seen else kind
        seen.add(kind)
        ax.axvline(epoch, color=colour, ls=style, lw=1, alpha=0.6, label=label)
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)


def _plot_loss(ax: Axes, history: RunHistory) -> None:
    series = history.series()
    if not series:
        _empty(ax, "no epochs recorded")
    xs = [e.epoch for e in series]
    ax.plot(xs, [e.val_loss for e in series], marker=".", label="val loss")
    ax.plot(xs, [e.train_loss for e in series], ls="--", alpha=0.7, label="train loss")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)


def _plot_params(ax: Axes, history: RunHistory) -> None:
    series = history.series()
    if not series:
        _empty(ax, "no epochs recorded")
    xs = [e.epoch for e in series]
    ax.plot(xs, [e.total_params for e in series], marker=".", label="total")
    ax.plot(xs, [e.total_params - e.seed_params for e in series], ls="--", label="without seeds")
    ax.set_ylabel("parameters")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)


def _plot_seed(ax: Axes, track: SeedTrack) -> None:
    epochs = sorted(track.alpha)
    (line,) = ax.plot(
        epochs,
        [track.alpha[e] for e in epochs],
        marker=".",
        label=f"{track.slot}:{track.blueprint}",
    )
    for epoch, kind in track.marks:
        marker, _ = _SEED_MARKERS[kind]
        ax.plot(
            [epoch],
            [track.alpha_at(epoch)],
            marker=marker,
            ms=10,
            color=line.get_color(),
            mec="black",
            mew=0.6,
            ls="none",
        )


def _plot_alphas(ax: Axes, history: RunHistory) -> None:
    from matplotlib.lines import Line2D

    if not history.seeds:
        _empty(ax, "no seeds")
    for track in history.seeds.values():
        _plot_seed(ax, track)
    handles, _ = ax.get_legend_handles_labels()
    kinds = {kind for track in history.seeds.values() for _, kind in track.marks}
    handles += [
        Line2D([], [], marker=marker, color="gray", ls="none", ms=8, label=label)
        for kind, (marker, label) in _SEED_MARKERS.items()
        if kind in kinds
    ]
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize="small", ncols=2)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("seed alpha")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def _title(history: RunHistory, run_dir: Path) -> str:
    start = history.run_started
    if start is None:
        return run_dir.name
    return f"{run_dir.name}: {start.task}, {start.controller} (seed {start.seed})"


def report_figure(history: RunHistory, title: str) -> Figure:
    """The report's panels, top to bottom.

    Train/val accuracy with vertical marks for germinate, fossilize, prune and rollback;
    train/val loss; total parameters; each seed's alpha with germinate / blend-start /
    fossilize / prune markers.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 14), layout="constrained")
    ax_acc, ax_loss, ax_params, ax_alpha = fig.subplots(4, 1, sharex=True)
    _plot_accuracy(ax_acc, history)
    _plot_loss(ax_loss, history)
    _plot_params(ax_params, history)
    _plot_alphas(ax_alpha, history)
    fig.suptitle(title)
    return fig


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Plot ``run_dir/events.jsonl`` into ``run_dir/report.png`` (written atomically; see
    :func:`report_figure`).

    Raises:
        RunDirError: events.jsonl is missing or corrupted.
    """
    run_dir = Path(run_dir)
    history = load_history(run_dir)
    fig = report_figure(history, _title(history, run_dir))
    return atomic_write_bytes(run_dir / "report.png", figure_png(fig))

"""esper report's growth view: parameters next to accuracy, static-matched, FLOPs to a target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.karn.tradeoff import compare_growth, format_growth_table, write_params_plot
from esper.leyline.events import EpochEnd, Event, RunStarted
from esper.nissa import JsonlSink

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(root: Path, name: str, controller: str, params: int, curve: list[tuple[float, float]]) -> Path:
    """A finished run: one epoch_end per (val accuracy, cumulative FLOPs), then its summary."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    events: list[Event] = [
        RunStarted(epoch=0, task="digits", controller=controller, seed=0, device="cpu", host_params=params)
    ]
    for epoch, (acc, flops) in enumerate(curve):
        events.append(
            EpochEnd(epoch=epoch, train_loss=1.0, train_accuracy=acc, val_loss=1.0, val_accuracy=acc,
                     total_params=params, seed_params=0, lr=0.1, wall_time_s=1.0, train_flops=flops)
        )  # fmt: skip
    with JsonlSink(run_dir / "events.jsonl") as sink:
        for event in events:
            sink.emit(event)
    summary = {"task": "digits", "controller": controller, "epochs": len(curve), "total_params": params,
               "final_val_accuracy": curve[-1][0], "train_flops": curve[-1][1]}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        _run(tmp_path, "small-a", "static", 100, [(0.5, 10), (0.6, 20)]),
        _run(tmp_path, "small-b", "static", 100, [(0.5, 10), (0.8, 20)]),  # width 100: mean 0.7
        _run(tmp_path, "large-a", "static", 300, [(0.6, 30), (0.85, 60), (0.9, 90)]),
        _run(tmp_path, "large-b", "static", 300, [(0.7, 30), (0.85, 60), (0.9, 90)]),  # 0.9 at 90
        _run(tmp_path, "grown-a", "heuristic", 200, [(0.5, 10), (0.9, 40), (0.95, 70)]),
        _run(tmp_path, "grown-b", "heuristic", 250, [(0.6, 10), (0.9, 50), (0.85, 80)]),
    ]


def test_groups_static_runs_by_size_and_grown_runs_by_controller(runs: list[Path]) -> None:
    groups, _ = compare_growth(runs)
    assert [(g.controller, g.mean_params, len(g.params)) for g in groups] == [
        ("static", 100, 2),
        ("static", 300, 2),
        ("heuristic", 225, 2),
    ]
    assert groups[0].mean_accuracy == pytest.approx(0.7)
    assert groups[2].curve_accuracy == pytest.approx([0.55, 0.9, 0.9])
    assert groups[2].curve_flops == pytest.approx([10, 45, 75])


def test_static_matched_and_flops_to_static_large_by_hand(runs: list[Path]) -> None:
    _, (c,) = compare_growth(runs)
    # grown: 225 params, between the static 100 (0.7) and 300 (0.9): 0.7 + 125/200 * 0.2 = 0.825
    assert c.matched_accuracy == pytest.approx(0.825)
    assert c.static_large is not None and c.static_large.mean_params == 300
    # target = static-large's final accuracy 0.9; the grown mean curve reaches it at epoch 1
    # (45 FLOPs), static-large at epoch 2 (90 FLOPs).
    assert c.target_accuracy == pytest.approx(0.9)
    assert (c.grown_flops, c.static_large_flops) == (pytest.approx(45), pytest.approx(90))


def test_a_given_target_accuracy_and_one_never_reached(runs: list[Path]) -> None:
    _, (c,) = compare_growth(runs, target_accuracy=0.85)
    assert (c.grown_flops, c.static_large_flops) == (pytest.approx(45), pytest.approx(60))
    _, (never,) = compare_growth(runs, target_accuracy=0.99)
    assert never.grown_flops is None and never.static_large_flops is None


def test_the_table_shows_params_next_to_accuracy_and_the_comparison(runs: list[Path]) -> None:
    table = format_growth_table(*compare_growth(runs))
    rows = {line.split()[1] + line.split()[3]: line.split() for line in table.splitlines()[1:4]}
    assert rows["static100"][4] == "0.7000" and rows["static300"][4] == "0.9000"
    assert rows["heuristic225"][4] == "0.9000"  # (0.95 + 0.85) / 2
    assert "static-matched 0.8250 (grown - matched +0.0750)" in table
    assert "FLOPs to accuracy 0.9000: heuristic 45, static-large (300 params) 90" in table


def test_the_plot_is_written(runs: list[Path], tmp_path: Path) -> None:
    path = write_params_plot(*compare_growth(runs), tmp_path / "params_vs_accuracy.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000  # two panels with lines, not blank

"""Run report (report.png) and run comparison (table and plot) from synthetic run directories."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from esper.karn import (
    RunDirError,
    compare_runs,
    comparison_figure,
    format_comparison_table,
    load_history,
    report_figure,
    write_comparison_plot,
    write_report,
)
from esper.karn.console import format_count
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.events import (
    AlphaChanged,
    EpochEnd,
    Event,
    Rollback,
    RunFinished,
    RunStarted,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    SeedSnapshot,
    StageChanged,
)
from esper.leyline.stages import SeedStage
from esper.nissa import JsonlSink

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _epoch(epoch: int, seeds: dict[str, SeedSnapshot], acc: float) -> EpochEnd:
    params = sum(s.params for s in seeds.values())
    return EpochEnd(
        epoch=epoch,
        train_loss=1 - acc,
        train_accuracy=acc + 0.02,
        val_loss=1 - acc,
        val_accuracy=acc,
        total_params=1000 + params,
        seed_params=params,
        lr=0.1,
        wall_time_s=float(epoch),
        seeds=seeds,
    )


def _germ(epoch: int, slot: str, blueprint: str, seed_id: str) -> SeedGerminated:
    return SeedGerminated(
        epoch=epoch,
        slot=slot,
        blueprint=blueprint,
        seed_id=seed_id,
        params=100,
        alpha_algorithm=AlphaAlgorithm.ADD,
        alpha_curve=AlphaCurve.LINEAR,
        tempo=3,
    )


def _stage(epoch: int, slot: str, seed_id: str, a: SeedStage, b: SeedStage) -> StageChanged:
    return StageChanged(epoch=epoch, slot=slot, seed_id=seed_id, from_stage=a, to_stage=b)


def _seed_run() -> list[Event]:
    """s1 in r0c0 fossilizes; s2 in r0c1 is pruned; a rollback replays epoch 7."""
    events: list[Event] = [
        RunStarted(epoch=0, task="digits", controller="heuristic", seed=0, device="cpu", host_params=1000)
    ]
    snap = {"r0c0": SeedSnapshot(stage=SeedStage.TRAINING, alpha=0.0, blueprint="conv_small", params=100)}
    events += [_epoch(1, {}, 0.5), _germ(2, "r0c0", "conv_small", "s1"), _epoch(2, snap, 0.6)]
    events += [
        _germ(3, "r0c1", "attention", "s2"),
        _stage(3, "r0c0", "s1", SeedStage.TRAINING, SeedStage.BLENDING),
    ]
    for epoch, alpha in ((3, 0.33), (4, 0.67), (5, 1.0)):
        events.append(AlphaChanged(epoch=epoch, slot="r0c0", seed_id="s1", alpha=alpha))
        snap = {
            "r0c0": SeedSnapshot(stage=SeedStage.BLENDING, alpha=alpha, blueprint="conv_small", params=100),
            "r0c1": SeedSnapshot(stage=SeedStage.TRAINING, alpha=0.0, blueprint="attention", params=100),
        }
        events.append(_epoch(epoch, snap, 0.6 + 0.05 * epoch))
    events += [
        SeedPruned(epoch=6, slot="r0c1", seed_id="s2", reason="no gain"),
        SeedFossilized(epoch=6, slot="r0c0", seed_id="s1", contribution=0.05),
    ]
    fossil = {"r0c0": SeedSnapshot(stage=SeedStage.FOSSILIZED, alpha=1.0, blueprint="conv_small", params=100)}
    events += [_epoch(6, fossil, 0.9), _epoch(7, fossil, 0.1)]
    events += [Rollback(epoch=7, reason="loss spike", restored_epoch=6, pruned_slot=None)]
    events += [_epoch(7, fossil, 0.91), RunFinished(epoch=7, summary={})]
    return events


def _write_run(run_dir: Path, events: list[Event], summary: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with JsonlSink(run_dir / "events.jsonl") as sink:
        for event in events:
            sink.emit(event)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_history_folds_the_events(tmp_path: Path) -> None:
    history = load_history(_write_run(tmp_path / "run", _seed_run()))
    assert [e.epoch for e in history.series()] == [1, 2, 3, 4, 5, 6, 7]
    assert history.epochs[7].val_accuracy == 0.91  # the replayed epoch wins
    s1, s2 = history.seeds["s1"], history.seeds["s2"]
    assert [k for _, k in s1.marks] == ["germinate", "blend", "fossilize"]
    assert [k for _, k in s2.marks] == ["germinate", "prune"]
    assert s1.alpha[4] == 0.67 and s1.alpha[7] == 1.0
    assert max(s2.alpha) == 5  # no alpha after the prune
    assert (7, "rollback") in history.marks


def test_report_with_seeds_prune_and_rollback(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run", _seed_run())
    path = write_report(run_dir)
    assert path == run_dir / "report.png"
    width, height = _png_size(path)
    assert width >= 600 and height >= 600
    assert path.stat().st_size > 20_000  # three panels of lines, not a blank image
    assert sorted(p.name for p in run_dir.iterdir()) == ["events.jsonl", "report.png"]


def test_report_with_zero_seeds_and_with_no_epochs(tmp_path: Path) -> None:
    start = RunStarted(epoch=0, task="t", controller="none", seed=0, device="cpu", host_params=1)
    plain = _write_run(tmp_path / "plain", [start, _epoch(1, {}, 0.5), _epoch(2, {}, 0.6)])
    assert _png_size(write_report(plain))[0] >= 600
    empty = _write_run(tmp_path / "empty", [start])
    assert _png_size(write_report(empty))[0] >= 600


def test_report_survives_a_torn_log(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run", _seed_run())
    with open(run_dir / "events.jsonl", "a") as f:
        f.write('{"event": "epoch_e')
    assert write_report(run_dir).exists()


def test_report_errors_name_the_run_dir(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"'.*nowhere' has no events\.jsonl"):
        write_report(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "events.jsonl").write_text("{broken\n{}\n")
    with pytest.raises(RunDirError, match=r"bad.*events\.jsonl:1"):
        write_report(bad)


def _summary(controller: str, acc: float) -> dict:
    return {
        "task": "digits",
        "controller": controller,
        "epochs": 7,
        "final_val_accuracy": acc,
        "best_val_accuracy": acc + 0.01,
        "host_params": 1000,
        "seed_params": 12_500,
        "seeds_germinated": 2,
        "seeds_fossilized": 1,
        "seeds_pruned": 1,
        "wall_time_s": 12.34,
    }


def test_compare_table_and_plot(tmp_path: Path) -> None:
    a = _write_run(tmp_path / "heur", _seed_run(), _summary("heuristic", 0.91))
    b = _write_run(tmp_path / "base", _seed_run()[:4], {"task": "digits", "controller": "none"})
    rows = compare_runs([a, b])
    assert [r["run"] for r in rows] == ["heur", "base"]
    assert rows[0]["final_val_accuracy"] == 0.91 and rows[1]["seeds_fossilized"] is None
    table = format_comparison_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["run", "task"] and "final acc" in lines[0] and "\x1b[" not in table
    heur = next(line for line in lines if line.startswith("heur"))
    assert "0.9100" in heur and "12.5k" in heur and "12.3s" in heur
    base = next(line for line in lines if line.startswith("base"))
    assert " - " in base
    out = write_comparison_plot([a, b], tmp_path / "compare.png")
    assert _png_size(out)[0] >= 600


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_compare_errors_name_the_run_dir(tmp_path: Path, content: str | None) -> None:
    run_dir = tmp_path / "broken_run"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "summary.json").write_text(content)
    with pytest.raises(RunDirError, match="broken_run"):
        compare_runs([run_dir])


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_report_has_a_loss_panel_with_validation_loss(tmp_path: Path) -> None:
    fig = report_figure(load_history(_write_run(tmp_path / "run", _seed_run())), "run")
    assert [ax.get_ylabel() for ax in fig.axes] == ["accuracy", "loss", "parameters", "seed alpha"]
    loss = fig.axes[1]
    assert {"val loss", "train loss"} <= set(_labels(loss))
    val = next(line for line in loss.get_lines() if line.get_label() == "val loss")
    assert list(val.get_ydata()) == [e.val_loss for e in load_history(tmp_path / "run").series()]


def test_comparison_plots_parameters_and_names_each_runs_size(tmp_path: Path) -> None:
    a = _write_run(tmp_path / "heur", _seed_run())
    b = _write_run(tmp_path / "base", _seed_run()[:2])
    fig = comparison_figure([a, b])
    assert [ax.get_ylabel() for ax in fig.axes] == ["val accuracy", "parameters"]
    final = load_history(a).series()[-1].total_params
    params = fig.axes[1].get_lines()[0]
    assert params.get_ydata()[-1] == final
    assert _labels(fig.axes[1])[0] == f"heur (heuristic), {format_count(final)} params"

"""Console sink: plain lines when output is not a terminal, a progress bar on one, quiet mode."""

from __future__ import annotations

import io

from rich.console import Console

from esper.karn import ConsoleSink, format_count, format_event
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.events import (
    AlphaChanged,
    EpochEnd,
    Event,
    PPOUpdate,
    Reward,
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


def _run() -> list[Event]:
    seed = SeedSnapshot(stage=SeedStage.BLENDING, alpha=0.4, blueprint="conv_[small]", params=600)
    return [
        RunStarted(
            epoch=0,
            config={"epochs": 3},
            task="digits",
            controller="heuristic",
            seed=1,
            device="cpu",
            host_params=12345,
        ),
        SeedGerminated(
            epoch=1,
            slot="r0c1",
            blueprint="conv_[small]",
            seed_id="s1",
            params=600,
            alpha_algorithm=AlphaAlgorithm.ADD,
            alpha_curve=AlphaCurve.LINEAR,
            tempo=5,
        ),
        StageChanged(
            epoch=2, slot="r0c1", seed_id="s1", from_stage=SeedStage.TRAINING, to_stage=SeedStage.BLENDING
        ),
        AlphaChanged(epoch=2, slot="r0c1", seed_id="s1", alpha=0.4),
        Reward(epoch=2, components={"r": 1.0}),
        EpochEnd(
            epoch=2,
            train_loss=0.3,
            train_accuracy=0.9,
            val_loss=0.35,
            val_accuracy=0.875,
            total_params=12945,
            seed_params=600,
            lr=0.01,
            wall_time_s=3.0,
            seeds={"r0c1": seed},
        ),
        SeedFossilized(epoch=3, slot="r0c1", seed_id="s1", contribution=0.02),
        SeedPruned(epoch=3, slot="r0c2", seed_id="s2", reason="no gain"),
        Rollback(epoch=3, reason="loss spike", restored_epoch=2, pruned_slot="r0c2"),
        PPOUpdate(epoch=0, round=4, metrics={"approx_kl": 0.0123, "mean_return": 1.5}),
        RunFinished(epoch=3, summary={"final_val_accuracy": 0.875, "seeds_fossilized": 1}),
    ]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    sink = ConsoleSink(file=out)
    assert not sink.console.is_terminal
    for event in _run():
        sink.emit(event)
    sink.close()
    text = out.getvalue()
    assert "\x1b[" not in text  # no escape codes
    lines = text.splitlines()
    assert len(lines) == 9  # alpha_changed and reward are not shown
    assert lines[0].startswith("run started at epoch 0: task digits, controller heuristic")
    assert "+ germinate r0c1 conv_[small]" in lines[1]  # markup in names is not eaten
    assert "TRAINING -> BLENDING" in lines[2]
    epoch = lines[3]
    assert epoch.startswith("epoch 2/3 ") and "val_acc 0.8750" in epoch
    assert "params 12.9k" in epoch and "r0c1 BLENDING a=0.40 conv_[small]" in epoch
    assert "* fossilize r0c1" in lines[4] and "x prune r0c2 seed s2: no gain" in lines[5]
    assert "rollback to epoch 2: loss spike, pruned r0c2" in lines[6]
    assert "ppo round 4" in lines[7] and "approx_kl 0.0123" in lines[7]
    assert "final_val_accuracy 0.875" in lines[8]


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    sink = ConsoleSink(quiet=True, file=out)
    for event in _run():
        sink.emit(event)
    sink.close()
    assert out.getvalue() == ""


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    sink = ConsoleSink(console=console)
    for event in _run():
        sink.emit(event)
    sink.close()
    text = out.getvalue()
    assert "epochs" in text and "1/3" in text  # the bar, one epoch done
    assert "fossilize r0c1" in text


def test_format_helpers() -> None:
    assert format_count(950) == "950"
    assert format_count(12345) == "12.3k"
    assert format_count(4_560_000) == "4.56M"
    assert format_event(AlphaChanged(epoch=1, slot="a", seed_id="b", alpha=0.1)) is None

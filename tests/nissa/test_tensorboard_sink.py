"""TensorBoard sink: scalars with slash keys land in an event file; a clear error without tensorboard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from esper.leyline.events import EpochEnd, PPOUpdate, RunStarted, SeedSnapshot
from esper.leyline.stages import SeedStage
from esper.nissa import TensorBoardSink

pytest.importorskip("tensorboard")


def test_writes_scalars_to_an_event_file(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path)
    sink.emit(
        RunStarted(
            epoch=0, config={"epochs": 2}, task="t", controller="c", seed=0, device="cpu", host_params=10
        )
    )
    for epoch in (1, 2):
        sink.emit(
            EpochEnd(
                epoch=epoch,
                train_loss=1.0,
                train_accuracy=0.5,
                val_loss=1.0,
                val_accuracy=0.25 * epoch,
                total_params=10,
                seed_params=0,
                lr=0.1,
                wall_time_s=1.0,
                seeds={"r0c1": SeedSnapshot(stage=SeedStage.BLENDING, alpha=0.5, blueprint="n")},
            )
        )
    sink.emit(PPOUpdate(epoch=0, round=1, metrics={"approx_kl": 0.02, "entropy": {"op": 1.5}}))
    sink.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val_accuracy", "seed/r0c1/alpha", "ppo/approx_kl", "ppo/entropy/op"} <= tags
    assert "seed/r0c1/stage" not in tags  # strings are not scalars
    values = [(s.step, s.value) for s in acc.Scalars("val_accuracy")]
    assert values == [(1, 0.25), (2, 0.5)]


def test_missing_tensorboard_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'esper\[tensorboard\]'"):
        TensorBoardSink(tmp_path)

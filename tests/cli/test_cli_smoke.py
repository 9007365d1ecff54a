"""One subprocess smoke test per command, the export loaded without Esper, and kill-and-resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_kit import TINY, popen_esper, run_esper

from esper.leyline.events import EpochEnd, RunFinished, RunStarted
from esper.nissa.jsonl import read_events
from esper.recipes.train import run_training
from esper.tamiyo.factory import make_controller
from esper.tolaria.checkpoint import load_grown
from esper.tolaria.config import RunConfig
from esper.tolaria.export import bake_final

pytestmark = pytest.mark.slow

RUN_FILES = {"config.json", "events.jsonl", "metrics.csv", "checkpoint.pt", "summary.json", "report.png"}
SUMMARY_KEYS = {
    "task",
    "controller",
    "epochs",
    "final_val_accuracy",
    "best_val_accuracy",
    "host_params",
    "seed_params",
    "seeds_germinated",
    "seeds_fossilized",
    "seeds_pruned",
    "wall_time_s",
}


def _in_process_run(out: Path, controller: str, epochs: int = 3, **changes: object) -> Path:
    config = RunConfig.from_mapping(
        {
            "task": "digits-impaired",
            "controller": controller,
            "epochs": epochs,
            "quiet": True,
            "out": str(out),
        }
        | changes
    )
    run_training(config, make_controller(config))
    return out


def _check_run_dir(run_dir: Path, controller: str, epochs: int) -> dict[str, object]:
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert (summary["task"], summary["controller"], summary["epochs"]) == (
        "digits-impaired",
        controller,
        epochs,
    )
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == epochs and config["controller"] == controller and config["lr"] > 0
    events = read_events(run_dir / "events.jsonl")
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == list(range(epochs))
    assert (run_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return summary


def test_help() -> None:
    """The installed console script answers; option texts are checked in-process (test_cli_input)."""
    top = run_esper("--help")
    assert top.returncode == 0, top.stderr
    for command in ("train", "report", "export"):
        assert command in top.stdout
    assert "Examples:" in top.stdout

    train = run_esper("train", "--help")
    assert train.returncode == 0
    for text in ("heuristic", "static", "random", "digits-impaired", "cifar10", "charlm", "Examples:"):
        assert text in train.stdout


def test_train_heuristic(tmp_path: Path) -> None:
    result = run_esper("train", "heuristic", *TINY, "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    _check_run_dir(tmp_path / "run", "heuristic", 3)
    assert "val accuracy" in result.stdout and str(tmp_path / "run") in result.stdout
    assert "epoch 0/3" not in result.stdout  # --quiet: no live view


def test_train_static_defaults_its_run_dir_under_runs(tmp_path: Path) -> None:
    result = run_esper("train", "static", *TINY, "--seed", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-digits-impaired-static")
    summary = _check_run_dir(run_dir, "static", 3)
    assert summary["seeds_germinated"] == 0 and summary["seed_params"] == 0 and summary["seed"] == 2


def test_report_compares_runs(tmp_path: Path) -> None:
    static = _in_process_run(tmp_path / "static-run", "static")
    grown = _in_process_run(tmp_path / "heuristic-run", "heuristic", plateau_window=1, min_training_epochs=1)
    result = run_esper("report", str(static), str(grown), "--out", str(tmp_path / "cmp.png"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("final acc" in line and "germinated" in line for line in lines)
    static_row = next(line for line in lines if line.startswith("static-run"))
    assert "static" in static_row.split()[1:3]
    assert any(line.startswith("heuristic-run") for line in lines)
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


_LOAD_WITHOUT_ESPER = """
import sys
sys.modules["esper"] = None  # any import of esper now fails
import torch
try:
    import esper  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("esper is importable")
program, x_path, out_path = sys.argv[1:4]
module = torch.export.load(program).module()
with torch.no_grad():
    logits = module(torch.load(x_path, weights_only=True))
torch.save(logits, out_path)
print(tuple(logits.shape))
"""


def test_export_loads_and_predicts_without_esper(tmp_path: Path) -> None:
    run = _in_process_run(
        tmp_path / "run",
        "heuristic",
        epochs=10,
        plateau_window=1,
        plateau_min_delta=0.5,
        min_training_epochs=1,
        blend_tempo_epochs=2,
    )
    result = run_esper("export", str(run), "--out", str(tmp_path / "final.pt2"))
    assert result.returncode == 0, result.stderr
    assert "seeds: r0c" in result.stdout
    meta = json.loads((tmp_path / "final.json").read_text())
    assert meta["input_shape"] == ["batch", 1, 8, 8] and meta["num_classes"] == 10
    assert meta["seeds"]

    x = torch.randn(7, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    loader = subprocess.run(
        [sys.executable, "-I", "-c", _LOAD_WITHOUT_ESPER, str(tmp_path / "final.pt2"), str(tmp_path / "x.pt"),
         str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )  # fmt: skip
    assert loader.returncode == 0, loader.stderr
    assert loader.stdout.strip() == "(7, 10)"
    with torch.no_grad():
        expected = bake_final(load_grown(run))(x)
    torch.testing.assert_close(
        torch.load(tmp_path / "y.pt", weights_only=True), expected, rtol=1e-5, atol=1e-6
    )


def _epochs_logged(events: Path) -> int:
    if not events.is_file():
        return 0
    return sum(isinstance(e, EpochEnd) for e in read_events(events))


def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = popen_esper(
        "train", "heuristic", "--task", "digits-impaired", "--epochs", "400", "-q", "--out", str(run_dir)
    )
    try:
        deadline = time.monotonic() + 180
        while _epochs_logged(run_dir / "events.jsonl") < 4 or not (run_dir / "checkpoint.pt").is_file():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    done = int(checkpoint["epoch"])
    assert done >= 3
    logged = read_events(run_dir / "events.jsonl")  # a torn last line is tolerated
    assert isinstance(logged[0], RunStarted)
    assert not (run_dir / "summary.json").exists()

    result = run_esper("train", "heuristic", "--resume", str(run_dir), "--epochs", str(done + 2), "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == done + 2 and summary["controller"] == "heuristic"
    events = read_events(run_dir / "events.jsonl")
    starts = [e for e in events if isinstance(e, RunStarted)]
    assert [s.epoch for s in starts] == [0, done]
    assert {e.epoch for e in events if isinstance(e, EpochEnd)} == set(range(done + 2))
    assert isinstance(events[-1], RunFinished)

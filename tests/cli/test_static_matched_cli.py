"""`esper eval --controller static-matched --against DIR` and `esper report` with a static curve."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from cli_kit import run_esper

from esper.karn.baselines import StaticPoint, interpolate_accuracy
from esper.recipes.baselines import static_params

pytestmark = pytest.mark.slow


def _summaries(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))]


def test_static_matched_against_a_grown_eval_then_report(tmp_path: Path) -> None:
    grown_dir, matched_dir = tmp_path / "grown", tmp_path / "matched"
    grown = run_esper("eval", "--controller", "heuristic", "--task", "digits-impaired", "--episodes", "2",
                      "--epochs", "6", "--out", str(grown_dir))  # fmt: skip
    assert grown.returncode == 0, grown.stderr
    grown_runs = _summaries(grown_dir)
    target = statistics.fmean(s["total_params"] for s in grown_runs)
    assert target > static_params("digits-impaired", 2)  # the width seeds blend in within 6 epochs

    ev = run_esper(
        "eval", "--controller", "static-matched", "--against", str(grown_dir), "--out", str(matched_dir)
    )
    assert ev.returncode == 0, ev.stderr
    result = json.loads((matched_dir / "eval.json").read_text())
    assert result["seeds"] == [s["seed"] for s in grown_runs] == [10000, 10001]
    assert result["target_params"] == target and result["epochs"] == 6
    low, high = result["brackets"]
    assert low["params"] <= target <= high["params"]
    assert [b["params"] for b in (low, high)] == [
        static_params("digits-impaired", b["width"]) for b in (low, high)
    ]
    # Each static run really is that wide, and the interpolation is the straight line per seed.
    static_runs = {(s["host_params"], s["seed"]): s for s in _summaries(matched_dir)}
    for i, seed in enumerate(result["seeds"]):
        a = static_runs[(low["params"], seed)]["final_val_accuracy"]
        b = static_runs[(high["params"], seed)]["final_val_accuracy"]
        assert [low["final_val_accuracy"][i], high["final_val_accuracy"][i]] == [a, b]
        expected = interpolate_accuracy(target, StaticPoint(low["params"], a), StaticPoint(high["params"], b))
        assert result["final_val_accuracy"][i] == pytest.approx(expected)
    assert "static-matched (interpolated)" in ev.stdout and f"static width {high['width']}" in ev.stdout

    plot = tmp_path / "comparison.png"
    rep = run_esper("report", str(grown_dir), str(matched_dir), "--out", str(plot))
    assert rep.returncode == 0, rep.stderr
    matched_mean = statistics.fmean(result["final_val_accuracy"])
    assert f"static-matched {matched_mean:.4f}" in rep.stdout
    assert "FLOPs to accuracy" in rep.stdout and (tmp_path / "params_vs_accuracy.png").is_file()


def test_static_matched_needs_grown_runs(tmp_path: Path) -> None:
    ev = run_esper("eval", "--controller", "static-matched", "--out", str(tmp_path / "m"))
    assert ev.returncode != 0 and "--against" in ev.stderr
    (tmp_path / "empty").mkdir()
    ev = run_esper("eval", "--controller", "static-matched", "--against", str(tmp_path / "empty"))
    assert ev.returncode != 0 and "no finished run" in ev.stderr

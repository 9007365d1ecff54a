"""Every script in ``examples/`` runs end to end with a tiny budget, as a user would run it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_resnet_in_your_own_loop(tmp_path: Path) -> None:
    result = _run("resnet_digits.py", "--epochs", "2", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch   1  val acc" in result.stdout
    assert (tmp_path / "run" / "events.jsonl").is_file()


@pytest.mark.slow
def test_char_gpt_through_the_cli(tmp_path: Path) -> None:
    from pydoc_data.topics import topics

    text = tmp_path / "input.txt"
    text.write_text("\n".join(topics[k] for k in sorted(topics))[:12_000], encoding="utf-8")
    out = tmp_path / "run"
    result = _run("char_gpt.py", "--text-file", str(text), "--epochs", "1", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "char_gpt.make_model" and summary["epochs"] == 1
    assert json.loads((out / "config.json").read_text())["target_modules"] == [r"transformer\.h\.\d+"]
    assert (out / "report.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None,
    reason="the Lightning example needs lightning: pip install 'esper[lightning]'",
)
def test_lightning_module_with_the_callback(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    result = _run("lightning_digits.py", "--epochs", "1", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "val_acc" in result.stdout and (out / "ckpt" / "last.ckpt").is_file()
    metrics = next(out.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert "esper/seeds_germinated" in metrics

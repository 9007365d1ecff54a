"""What the commands leave and print: where report writes its plot, eval's hint for a used
folder, the summary's grammar, and the run_started event's config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from esper.cli.main import cli
from esper.leyline.events import RunStarted
from esper.nissa.jsonl import read_events


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="esper")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("runs") / "static"
    args = ("--task", "digits-impaired", "--epochs", "1", "--quiet", "--out", str(out))
    result = _invoke("train", "static", *args)
    assert result.exit_code == 0, result.output
    return out, result


def test_the_summary_says_1_epoch(one_epoch_run):
    _, result = one_epoch_run
    assert "digits-impaired / static: 1 epoch in " in result.stdout


def test_run_started_records_the_resolved_config_as_config_json_does(one_epoch_run):
    run_dir, _ = one_epoch_run
    (started,) = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, RunStarted)]
    saved = json.loads((run_dir / "config.json").read_text())
    assert started.config == saved
    assert started.config["epochs"] == 1 and started.config["lr"] is not None


def test_report_writes_its_plot_beside_the_runs_not_into_the_current_folder(
    one_epoch_run, tmp_path, monkeypatch
):
    run_dir, _ = one_epoch_run
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(run_dir, runs / name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _invoke("report", str(runs / "a"), str(runs / "b"))
    assert result.exit_code == 0, result.output
    assert (runs / "comparison.png").is_file() and not any(elsewhere.iterdir())
    assert f"comparison plot: {runs / 'comparison.png'}" in result.stdout
    explicit = _invoke("report", str(runs), "--out", str(tmp_path / "mine.png"))
    assert explicit.exit_code == 0 and (tmp_path / "mine.png").is_file()


def test_eval_into_a_used_folder_names_options_eval_has(tmp_path):
    earlier = tmp_path / "evals" / "static-seed10000"
    earlier.mkdir(parents=True)
    (earlier / "checkpoint.pt").write_bytes(b"")
    result = _invoke("eval", "--controller", "static", "--episodes", "1", "--out", str(tmp_path / "evals"))
    assert result.exit_code == 2
    assert "--resume" not in result.stderr and "pass another --out" in result.stderr
    assert [p.name for p in earlier.iterdir()] == ["checkpoint.pt"]  # nothing trained, nothing touched

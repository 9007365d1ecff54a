"""``esper train ... --model/--data/--target-modules`` on the ResNet example, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from esper.cli.main import cli
from esper.tolaria.checkpoint import load_checkpoint

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resnet_digits.py"
USER = ["--model", f"{EXAMPLE}:make_model", "--data", f"{EXAMPLE}:make_data"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="esper")


def test_train_resume_and_export_a_user_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--target-modules", "layer2", "--target-modules", "layer3", "--seed", "3", "-q"]
    result = _invoke("train", "heuristic", *USER, *common, "--epochs", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "resnet_digits.make_model / heuristic: 1 epoch in" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == f"{EXAMPLE}:make_model" and config["target_modules"] == ["layer2", "layer3"]

    result = _invoke("train", "heuristic", "--resume", str(out), "--epochs", "2", "-q")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)["epoch"] == 2

    result = _invoke("export", str(out))
    assert result.exit_code == 0, result.output
    assert "input float32 ['batch', 1, 8, 8] -> logits ['batch', 10]" in result.stdout


def test_example_input_shape_is_recorded_for_export(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*USER, "--target-modules", "layer[23]", "--example-input-shape", "1,8,8", "--epochs", "1"]
    result = _invoke("train", "static", *args, "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(out)
    assert saved["config"]["example_input_shape"] == [1, 8, 8]
    assert list(saved["model_config"]["target_modules"]) == ["layer2", "layer3"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", f"{EXAMPLE}:nope", "--data", f"{EXAMPLE}:make_data"], ["'nope'", "make_model"]),
        (["--model", "no_such_pkg.models:net", "--data", f"{EXAMPLE}:make_data"], ["does not import"]),
        (
            ["--model", f"{EXAMPLE}:make_data", "--data", f"{EXAMPLE}:make_data"],
            ["expected a torch.nn.Module"],
        ),
        (["--model", f"{EXAMPLE}:make_model"], ["data: model and data come together"]),
        ([*USER, "--task", "digits"], ["--task and --model are alternatives"]),
        ([*USER, "--example-input-shape", "1,x"], ["1,x"]),
    ],
)
def test_bad_user_model_input_exits_2_and_leaves_no_run_dir(
    tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "run"
    targets = ["--target-modules", "layer2"]
    result = _invoke("train", "heuristic", *args, *targets, "--epochs", "1", "--out", str(out), "-q")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert not out.exists()

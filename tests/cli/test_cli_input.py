"""Bad input: valid values listed, config problems reported together, refused resumes touch nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from esper.cli.main import RESUME_OVERRIDES, build_config, cli
from esper.data import list_tasks
from esper.errors import CheckpointError, ConfigError
from esper.recipes.train import run_training
from esper.tamiyo.factory import make_controller
from esper.tolaria.config import RunConfig

TINY = ["--task", "digits-impaired", "--epochs", "2", "--quiet"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="esper")


def _assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""  # the message goes to stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and mtime (ns)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch heuristic run (tests copy it before touching it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    config = RunConfig(task="digits-impaired", epochs=2, quiet=True, out=str(out))
    run_training(config, make_controller(config))
    return out


# ----------------------------------------------------------------------------- unknown values
def test_unknown_task_lists_the_tasks() -> None:
    _assert_user_error(
        _invoke("train", "heuristic", "--task", "mnist"), "'mnist' is not one of", *list_tasks()
    )


def test_unknown_controller_lists_the_controllers() -> None:
    result = _invoke("train", "heuristc")
    _assert_user_error(result, "no command 'heuristc'", "Did you mean 'heuristic'?")
    listed = result.stderr.split("choose one of: ")[1].split(".")[0].split(", ")
    assert {"heuristic", "random", "static"} <= set(listed)


def test_unknown_command_lists_the_commands() -> None:
    result = _invoke("trian")
    _assert_user_error(result, "Did you mean 'train'?")
    listed = result.stderr.split("choose one of: ")[1].split(".")[0].split(", ")
    assert {"export", "report", "train"} <= set(listed)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--amp", "fp8"], ["'fp8' is not one of", "'auto', 'none', 'bf16', 'fp16'"]),
        (["--epochs", "0"], ["--epochs", "x>=1"]),
        (["--lr", "-1"], ["--lr", "x>0"]),
        (["--batch-size", "many"], ["--batch-size", "'many' is not a valid integer"]),
        (["--epoch", "3"], ["No such option '--epoch'", "Did you mean '--epochs'?"]),
    ],
)
def test_bad_option_values_say_what_is_valid(args: list[str], fragments: list[str]) -> None:
    _assert_user_error(_invoke("train", "static", *args), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_fails_before_training(tmp_path: Path) -> None:
    result = _invoke("train", "static", *TINY, "--device", "cuda", "--out", str(tmp_path / "run"))
    _assert_user_error(result, "device", "CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_says_what_to_fetch_and_leaves_no_run_dir(tmp_path: Path) -> None:
    result = _invoke("train", "static", "--task", "cifar10", "--quiet", "--out", str(tmp_path / "run"))
    _assert_user_error(result, "cifar-10-python.tar.gz", "data_dir")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- config files
def test_a_bad_config_file_lists_every_problem_before_training(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('task = "mnist"\nepoch = 3\nlr = "fast"\namp = "fp8"\nplateau_window = 0\n')
    result = _invoke("train", "heuristic", "--config", str(config), "--out", str(tmp_path / "run"))
    _assert_user_error(
        result,
        "run.toml",
        "unknown key 'epoch'. Did you mean 'epochs'?",
        "lr: expected float or null, got 'fast'",
        "amp: 'fp8' is not one of",
        "plateau_window: must be >= 1",
        "task: unknown task 'mnist'",
    )
    assert result.stderr.count("\n  - ") == 5
    assert not (tmp_path / "run").exists()


def test_unreadable_config_file(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{oops")
    _assert_user_error(_invoke("train", "static", "--config", str(tmp_path / "run.json")), "not valid JSON")


def test_command_line_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "digits-impaired", "epochs": 9, "lr": 0.02, "controller": "random"}))
    config = build_config({"config_file": str(path), "epochs": 2, "seed": None}, controller="static")
    assert (config.task, config.epochs, config.lr, config.controller) == (
        "digits-impaired",
        2,
        0.02,
        "static",
    )
    assert config.seed == 0  # an option that was not given (None) keeps the file's/default value


def test_config_file_and_flags_reach_the_run(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('task = "digits-impaired"\nepochs = 7\nlr = 0.01\nseed = 5\n')
    out = tmp_path / "run"
    result = _invoke("train", "static", "--config", str(path), "--epochs", "2", "--quiet", "--out", str(out))
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["seed"], saved["controller"]) == (2, 0.01, 5, "static")
    assert "digits-impaired / static: 2 epochs" in result.stdout


def test_train_random_with_tensorboard(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _invoke("train", "random", *TINY, "--seed", "4", "--tensorboard", "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["controller"], summary["epochs"], summary["seed"]) == ("random", 2, 4)
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())


def test_build_config_without_options_is_the_default_run() -> None:
    assert build_config({}, controller="heuristic") == RunConfig()


def test_build_config_reports_all_problems_together(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"tsk": "digits", "epochs": "3"}))
    with pytest.raises(ConfigError) as exc:
        build_config({"config_file": str(path), "task": "nope"})
    message = str(exc.value)
    assert (
        "Did you mean 'task'?" in message
        and "epochs: expected" in message
        and "unknown task 'nope'" in message
    )


# ----------------------------------------------------------------------------- runs and resumes
def test_a_fresh_run_refuses_a_directory_holding_a_run(finished_run: Path) -> None:
    before = _listing(finished_run)
    _assert_user_error(
        _invoke("train", "heuristic", *TINY, "--out", str(finished_run)), "already holds a run"
    )
    assert _listing(finished_run) == before


def test_resume_of_a_missing_checkpoint_says_so_and_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.jsonl").write_text("")
    before = _listing(tmp_path)
    result = _invoke("train", "heuristic", "--resume", str(tmp_path / "run"))
    _assert_user_error(result, "no checkpoint at", "checkpoint.pt")
    assert _listing(tmp_path) == before
    _assert_user_error(_invoke("train", "heuristic", "--resume", str(tmp_path / "nope")), "no checkpoint at")
    assert _listing(tmp_path) == before


def test_resume_of_a_corrupt_checkpoint_says_so_and_touches_nothing(
    tmp_path: Path, finished_run: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "events.jsonl", "metrics.csv", "config.json"):
        data = (finished_run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2] if name == "checkpoint.pt" else data)
    before = _listing(tmp_path)
    result = _invoke("train", "heuristic", "--resume", str(run), "--epochs", "5")
    _assert_user_error(result, "corrupt or unreadable", str(run / "checkpoint.pt"))
    assert _listing(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--lr", "0.1", "--seed", "3"], ["--seed, --lr cannot change", "only --epochs, --device"]),
        (["--config", "x.toml"], ["--config cannot be combined with --resume"]),
        ([], ["already trained 2 of its 2 epochs", "--epochs N"]),
    ],
)
def test_resume_refuses_changes_it_cannot_honour(
    finished_run: Path, args: list[str], fragments: list[str]
) -> None:
    before = _listing(finished_run)
    _assert_user_error(_invoke("train", "heuristic", "--resume", str(finished_run), *args), *fragments)
    assert _listing(finished_run) == before


def test_resume_with_another_controller_names_the_right_command(finished_run: Path) -> None:
    result = _invoke("train", "static", "--resume", str(finished_run), "--epochs", "4")
    _assert_user_error(result, "trained with the 'heuristic' controller", "esper train heuristic --resume")


def test_resume_keeps_the_saved_settings(finished_run: Path) -> None:
    config = build_config({"resume": str(finished_run), "epochs": 6, "quiet": False}, controller="heuristic")
    assert (config.task, config.epochs, config.quiet, config.out) == (
        "digits-impaired",
        6,
        False,
        str(finished_run),
    )
    assert set(RESUME_OVERRIDES) >= {"epochs", "device", "quiet"}


def test_build_config_raises_checkpoint_error_for_a_missing_run(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        build_config({"resume": str(tmp_path)})


def test_resume_extends_a_finished_run(tmp_path: Path, finished_run: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for p in finished_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    result = _invoke("train", "heuristic", "--resume", str(run), "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3


# ----------------------------------------------------------------------------- report / export
def test_report_of_an_unfinished_run_says_so(tmp_path: Path) -> None:
    _assert_user_error(_invoke("report", str(tmp_path)), "has no summary.json")
    _assert_user_error(_invoke("report"), "Missing argument 'RUN_DIR...'")


def test_export_of_a_missing_run_says_so(tmp_path: Path) -> None:
    _assert_user_error(_invoke("export", str(tmp_path / "nope")), "no checkpoint at")
    assert not (tmp_path / "nope").exists()


def test_help_texts_document_every_option() -> None:
    for args in (["--help"], ["train", "--help"], ["report", "--help"], ["export", "--help"]):
        result = _invoke(*args)
        assert result.exit_code == 0 and "Usage: esper" in result.stdout
    options = _invoke("train", "heuristic", "--help").stdout
    flags = [
        "--task", "--epochs", "--seed", "--out", "--device", "--amp", "--compile", "--resume", "--config",
        "--data-dir", "--text-file", "--lr", "--batch-size", "--max-seed-params", "--tensorboard", "--quiet",
    ]  # fmt: skip
    for flag in flags:
        line = next(
            line for line in options.splitlines() if line.strip().startswith(flag) or f", {flag}" in line
        )
        assert len(line.split(maxsplit=2)) >= 2, line  # followed by its help text
    assert _invoke("--version").stdout.strip() == "esper 0.1.0"


def test_report_expands_a_folder_of_run_dirs_but_keeps_a_run_dir_as_is(tmp_path) -> None:
    from esper.cli.main import _expand_run_dirs

    for name in ("b", "a"):
        (tmp_path / "evals" / name).mkdir(parents=True)
        (tmp_path / "evals" / name / "summary.json").write_text("{}")
    (tmp_path / "evals" / "eval.json").write_text("{}")
    (tmp_path / "evals" / "not-a-run").mkdir()
    run = tmp_path / "evals" / "a"
    assert _expand_run_dirs([str(tmp_path / "evals"), str(run)]) == [
        str(tmp_path / "evals" / "a"),
        str(tmp_path / "evals" / "b"),
        str(run),
    ]

"""Bring your own model through the run recipe: train, resume, load_grown, export, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from byom_kit import write_user_code

import esper
from esper.errors import CheckpointError, EsperError, InjectionError
from esper.recipes.train import run_training
from esper.tamiyo.factory import make_controller
from esper.tolaria.checkpoint import load_checkpoint
from esper.tolaria.config import RunConfig
from esper.tolaria.data import BatchError
from esper.tolaria.export import bake_final, export_grown
from esper.tolaria.user_code import FactoryError, load_factory


def _config(code: Path, out: Path, **changes: object) -> RunConfig:
    settings: dict[str, object] = {
        "controller": "random",  # grows (and prunes) from the first epoch
        "model": f"{code}:make_model",
        "data": f"{code}:make_data",
        "target_modules": ["block"],
        "epochs": 4,
        "quiet": True,
        "out": str(out),
        "min_training_epochs": 1,
        "min_holding_epochs": 0,
    }
    return RunConfig.from_mapping({**settings, **changes})


def _run(config: RunConfig, resume: bool = False) -> dict:
    return run_training(config, make_controller(config), resume=resume)


@pytest.fixture(scope="module")
def user_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_code(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def finished(user_code: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, _run(_config(user_code, out))


def test_a_user_model_run_leaves_a_complete_run_folder(finished: tuple[Path, dict], user_code: Path) -> None:
    out, summary = finished
    for name in ("config.json", "events.jsonl", "metrics.csv", "checkpoint.pt", "summary.json", "report.png"):
        assert (out / name).is_file(), name
    assert summary["task"] == "user_net.make_model" and summary["epochs"] == 4
    assert summary["seeds_germinated"] >= 1
    saved = load_checkpoint(out)
    assert saved["config"]["model"] == f"{user_code.resolve()}:make_model"
    assert saved["config"]["target_modules"] == ["block"]
    spec = {"shape": [1, 8, 8], "dtype": "float32", "num_classes": 4, "task": "user_net.make_model",
            "normalization": None}  # a user model takes its inputs as they are
    assert saved["input_spec"] == spec


def test_load_grown_rebuilds_the_model_from_the_recorded_factory_or_a_fresh_instance(
    finished: tuple[Path, dict], user_code: Path
) -> None:
    out, _ = finished
    grown = esper.load_grown(out)
    given = esper.load_grown(out, model=load_factory(f"{user_code}:Net", "test")())
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(grown(x), given(x))
    assert [s.stage for s in grown.slots()] == [s.stage for s in given.slots()]
    assert list(grown.seed_slots) == ["block"]


def test_export_of_a_user_model_run_predicts_as_the_grown_model(
    finished: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = finished
    path = export_grown(out, tmp_path / "net.pt2")
    program = torch.export.load(str(path)).module()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(program(x), bake_final(esper.load_grown(out))(x))


def test_resume_continues_as_the_uninterrupted_run(user_code: Path, tmp_path: Path) -> None:
    whole = _run(_config(user_code, tmp_path / "whole"))
    _run(_config(user_code, tmp_path / "parts", epochs=2))
    resumed = _run(_config(user_code, tmp_path / "parts", epochs=4), resume=True)
    for key in ("final_val_accuracy", "final_val_loss", "seed_params", "seeds_germinated", "seeds_pruned"):
        assert resumed[key] == whole[key], key
    a = load_checkpoint(tmp_path / "whole")["model"]
    b = load_checkpoint(tmp_path / "parts")["model"]
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b[k]), k


def test_load_grown_of_a_run_whose_model_file_is_gone_says_how_to_load_it(
    finished: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = finished
    run = tmp_path / "run"
    shutil.copytree(out, run)
    data = load_checkpoint(run)  # as if the model's file had moved since the run
    data["config"]["model"] = data["config"]["model"].replace("user_net.py", "gone.py")
    torch.save(data, run / "checkpoint.pt")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(CheckpointError, match=r"gone\.py.*model=MyNet\(\)"):
        esper.load_grown(run)
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize(
    ("changes", "error", "fragments"),
    [
        ({"model": "no_such_module_here:make"}, FactoryError, ["no_such_module_here", "does not import"]),
        ({"model": "{code_dir}/missing.py:make_model"}, FactoryError, ["missing.py", "no file"]),
        ({"model": "{code}:make_modle"}, FactoryError, ["make_modle", "make_model"]),
        ({"model": "{code}"}, FactoryError, ["MODULE:FACTORY"]),
        ({"model": "{code}:not_a_model"}, FactoryError, ["returned a str", "nn.Module"]),
        ({"data": "{code}:one_loader"}, FactoryError, ["(train, val)"]),
        ({"data": "{code}:three_channel_data"}, BatchError, ["(16, 3, 8, 8)", "does not fit", "make_model"]),
        ({"target_modules": ["blok"]}, InjectionError, ["blok", "block"]),
    ],
)
def test_bad_user_input_is_a_clear_error_and_creates_no_run_dir(
    user_code: Path, tmp_path: Path, changes: dict, error: type[EsperError], fragments: list[str]
) -> None:
    filled = {
        k: [x.format(code=user_code, code_dir=user_code.parent) for x in v]
        if isinstance(v, list)
        else v.format(code=user_code, code_dir=user_code.parent)
        for k, v in changes.items()
    }
    config = _config(user_code, tmp_path / "run", **filled)
    with pytest.raises(error) as info:
        _run(config)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not (tmp_path / "run").exists()


def test_run_config_says_which_user_model_settings_are_missing_or_do_not_apply() -> None:
    with pytest.raises(EsperError) as info:
        RunConfig(model="a.py:f", batch_size=8, text_file="t.txt")
    message = str(info.value)
    for fragment in ("data: model and data come together", "target_modules:", "batch_size:", "text_file:"):
        assert fragment in message
    with pytest.raises(EsperError, match="target_modules: only used with model"):
        RunConfig(target_modules=["block"])


def test_load_grown_refuses_a_model_for_a_run_of_esper_own_host(tmp_path: Path) -> None:
    config = RunConfig(task="digits-impaired", epochs=1, quiet=True, out=str(tmp_path / "run"))
    _run(config)
    with pytest.raises(CheckpointError, match="call load_grown without model="):
        esper.load_grown(tmp_path / "run", model=torch.nn.Linear(2, 2))

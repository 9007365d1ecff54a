"""RunConfig: validation of keys, types and values, all problems at once; JSON and TOML files."""

from __future__ import annotations

import json

import pytest

from esper.errors import ConfigError
from esper.tolaria.config import RunConfig, load_config_file


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(exc.value).split("\n  - ")[1:]


def test_defaults_are_valid_and_round_trip() -> None:
    config = RunConfig()
    assert config.task == "digits" and config.controller == "heuristic" and config.amp == "auto"
    assert RunConfig.from_mapping(config.to_dict()) == config


def test_unknown_key_suggests_the_close_one_and_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_mapping({"epoch": 3})
    (problem,) = _problems(exc)
    assert "unknown key 'epoch'" in problem
    assert "Did you mean 'epochs'?" in problem
    assert "Valid keys:" in problem and "max_seed_params" in problem


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", "3", "int or null"),
        ("epochs", True, "int or null"),
        ("lr", "fast", "float or null"),
        ("compile", 1, "bool"),
        ("task", 7, "str"),
        ("slots", ["r0c0", 1], "list"),
    ],
)
def test_wrong_type_names_the_field_the_expected_type_and_the_value(
    key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_mapping({key: value})
    (problem,) = _problems(exc)
    assert problem.startswith(f"{key}: expected {expected}")
    assert repr(value) in problem


def test_int_is_accepted_where_a_float_is_expected() -> None:
    assert RunConfig(lr=1).lr == 1


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"controller": "ppo2"}, "controller: 'ppo2' is not one of"),
        ({"amp": "fp8"}, "amp: 'fp8' is not one of"),
        ({"epochs": 0}, "epochs: must be >= 1"),
        ({"embargo_epochs": -1}, "embargo_epochs: must be >= 0"),
        ({"lr": 0.0}, "lr: must be > 0"),
        ({"grad_clip": float("nan")}, "grad_clip: must be a finite number"),
        ({"governor_spike_factor": 1.0}, "governor_spike_factor: must be > 1"),
    ],
)
def test_bad_values_are_rejected(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        RunConfig.from_mapping(changes)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_mapping({"epoch": 3, "lrr": 0.1, "epochs": "ten", "amp": "fp8", "seed": 1.5})
    problems = _problems(exc)
    assert len(problems) == 5
    joined = "\n".join(problems)
    for fragment in ("'epoch'", "'lrr'", "epochs: expected", "amp: 'fp8'", "seed: expected int"):
        assert fragment in joined


def test_replace_validates_the_changes() -> None:
    config = RunConfig(epochs=3)
    assert config.replace(epochs=5).epochs == 5
    with pytest.raises(ConfigError, match="epochs"):
        config.replace(epochs=-5)


def test_toml_and_json_files_give_the_same_config(tmp_path) -> None:
    settings = {"task": "digits-impaired", "epochs": 4, "lr": 0.01, "slots": ["r0c1"], "compile": False}
    (tmp_path / "run.json").write_text(json.dumps(settings))
    (tmp_path / "run.toml").write_text(
        'task = "digits-impaired"\nepochs = 4\nlr = 0.01\nslots = ["r0c1"]\ncompile = false\n'
    )
    from_json = RunConfig.from_mapping(load_config_file(tmp_path / "run.json"))
    from_toml = RunConfig.from_mapping(load_config_file(tmp_path / "run.toml"))
    assert from_json == from_toml
    assert from_toml.slots == ["r0c1"] and from_toml.epochs == 4


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("run.yaml", "epochs: 3", "must end in .json or .toml"),
        ("run.json", "{not json", "is not valid JSON"),
        ("run.toml", "epochs = = 3", "is not valid TOML"),
        ("run.json", "[1, 2]", "must hold a table/object"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, name: str, text: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config_file(path)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"compile_backend": "nope"}, ["compile_backend: 'nope' is not a torch.compile backend", "inductor"]),
        ({"blueprints": ["conv_small", "nope"]}, ["blueprints: unknown blueprint 'nope'", "conv_heavy"]),
        ({"seed": 2**64}, ["seed: must be in [0, 2**63)", str(2**64)]),
        ({"seed": -1}, ["seed: must be in [0, 2**63)"]),
    ],
)
def test_values_found_only_after_the_run_started_are_refused_up_front(changes, fragments) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_a_valid_non_default_backend_is_accepted() -> None:
    assert RunConfig(compile_backend="eager").compile_backend == "eager"


def test_a_binary_config_file_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config_file(path)

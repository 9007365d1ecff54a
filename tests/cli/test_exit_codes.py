"""Every bad input or full/read-only disk ends in a clear message and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from esper.cli.main import cli

TINY = ["--task", "digits-impaired", "--epochs", "1", "--quiet"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="esper")


def _assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_a_binary_config_file(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_bytes(b"\x00\xff\xfe binary")
    config = str(tmp_path / "run.json")
    result = _invoke("train", "heuristic", "--config", config, "--out", str(tmp_path / "r"))
    _assert_user_error(result, "not UTF-8 text")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["train", "heuristic", *TINY, "--out", "{out}"],
        ["train", "ppo", "--rounds", "1", "--out", "{out}"],
        ["eval", "--controller", "random", "--episodes", "1", "--epochs", "1", "--out", "{out}"],
    ],
)
def test_a_seed_beyond_64_bits_leaves_no_folder(tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "run"
    result = _invoke(*[a.format(out=out) for a in command], "--seed", str(2**70))
    _assert_user_error(result, "seed", str(2**70))
    assert not out.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    result = _invoke("train", "heuristic", *TINY, "--out", str(tmp_path / "run"))
    _assert_user_error(result, os.strerror(code), str(tmp_path / "run"))


def test_an_invalid_compile_backend_or_blueprint_in_a_config_fails_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('compile = true\ncompile_backend = "nope"\nblueprints = ["nope"]\n')
    result = _invoke("train", "heuristic", *TINY, "--config", str(tmp_path / "run.toml"),
                     "--out", str(tmp_path / "run"))  # fmt: skip
    _assert_user_error(result, "compile_backend: 'nope'", "unknown blueprint 'nope'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"not a torch file at all",
        {"config": {"obs_dim": "many", "head_sizes": {}}, "state_dict": {}},
        {"config": {"obs_dim": 4, "head_sizes": {"op": 2}}},
        ["a", "list"],
    ],
)
def test_a_corrupt_or_malformed_policy(tmp_path: Path, content: object) -> None:
    path = tmp_path / "policy.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    train = _invoke("train", "policy", "--policy", str(path), *TINY, "--out", str(tmp_path / "run"))
    _assert_user_error(train, str(path))
    assert not (tmp_path / "run").exists()
    evaluation = _invoke("eval", "--controller", str(path), "--episodes", "1", "--epochs", "1",
                         "--out", str(tmp_path / "eval"))  # fmt: skip
    _assert_user_error(evaluation, str(path))

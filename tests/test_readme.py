"""The README's examples do what they say.

Python blocks run as written (in this process, in a temporary folder); a
``print(...)  # TEXT`` line promises that TEXT (up to a ``:`` that starts an explanation) is
printed, and the printed lines must hold every promise in order.
Every ``esper`` line of a bash block parses (its commands and options exist), and the
"Command line" block runs as written, ``runs/<run>`` standing for the last run it trained
(a ``train`` line without ``--epochs`` promises nothing about growth and runs 3 epochs).
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from esper.cli.main import cli
from esper.tolaria.config import RunConfig, load_config_file

README = Path(__file__).parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.S)
BASH = re.findall(r"```bash\n(.*?)```", TEXT, re.S)
TOML = re.findall(r"```toml\n(.*?)```", TEXT, re.S)
COMMAND_LINE = next(b for b in BASH if b.startswith("esper train heuristic "))


def _promises(block: str) -> list[str]:
    comments = re.findall(r"^[ \t]*print\(.*?\)[ \t]+#[ \t]*(.+)$", block, re.M)
    return [comment.split(":")[0].strip() for comment in comments]


def _run_python(block: str) -> list[str]:
    """Run a README block in this process (in the current folder); its printed lines."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(README), "exec"), {})
    return _check_promises(block, printed.getvalue())


def _check_promises(block: str, stdout: str) -> list[str]:
    lines = stdout.splitlines()
    pending = iter(lines)
    for promise in _promises(block):
        assert any(line.strip() == promise for line in pending), (promise, lines)
    return lines


def _esper_lines(block: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("esper ")]


def test_the_readme_has_the_examples_this_file_checks():
    assert len(PYTHON) == 5 and len(TOML) == 1
    assert all(_promises(block) for block in PYTHON)


@pytest.mark.slow
def test_the_grow_your_own_model_loop_fossilizes_a_seed_in_the_injected_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_python(PYTHON[0])  # its print promises the stages
    assert (tmp_path / "runs" / "mine" / "events.jsonl").is_file()


def test_the_slot_example_walks_one_seed_to_fossilized():
    lines = _run_python(PYTHON[1])
    stages = [line.split()[1] for line in lines[1:]]
    assert stages[-1] == "FOSSILIZED"
    assert list(dict.fromkeys(stages)) == ["TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"]


def test_the_config_file_example_is_a_valid_run_config(tmp_path):
    (tmp_path / "run.toml").write_text(TOML[0])
    config = RunConfig.from_mapping(load_config_file(tmp_path / "run.toml"))
    assert config.task == "digits-impaired" and config.max_seed_params == 5000


def test_every_readme_command_line_parses(tmp_path, monkeypatch):
    """Each line's commands and options exist and its values are valid (commands stubbed out)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(TOML[0])
    (tmp_path / "runs" / "ppo").mkdir(parents=True)
    (tmp_path / "runs" / "ppo" / "policy.pt").write_bytes(b"")  # the --policy option checks it exists
    ran: list[str] = []
    for path in _leaf_commands(cli):
        monkeypatch.setattr(path, "callback", lambda _name=path.name, **params: ran.append(_name))
    lines = [args for block in BASH for args in _esper_lines(block)]
    assert len(lines) >= 12
    for args in lines:
        result = CliRunner().invoke(cli, [a.replace("<run>", "some-run") for a in args[1:]])
        assert result.exit_code == 0, (args, result.output)
    assert len(ran) == len(lines)


def _leaf_commands(group: click.Group) -> list[click.Command]:
    leaves: list[click.Command] = []
    for command in group.commands.values():
        leaves += _leaf_commands(command) if isinstance(command, click.Group) else [command]
    return leaves


@pytest.mark.slow
def test_the_python_run_grows_a_seed_that_load_grown_and_the_export_keep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_python(PYTHON[2])
    export = CliRunner().invoke(cli, ["export", "runs/impaired"])
    assert export.exit_code == 0, export.output
    _run_python(PYTHON[4])


def test_the_engine_loop_runs_three_epochs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_python(PYTHON[3])


@pytest.mark.slow
def test_the_command_line_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(TOML[0])
    last_run = ""
    for args in _esper_lines(COMMAND_LINE):
        args = [a.replace("runs/<run>", last_run) for a in args[1:]]
        if args[0] == "train" and "--epochs" not in args:
            args += ["--epochs", "3"]  # a line that promises only "default settings": keep it short
        args = [m for a in args for m in (sorted(glob.glob(a, root_dir=tmp_path)) if "*" in a else [a])]
        out = CliRunner().invoke(cli, args, prog_name="esper")
        assert out.exit_code == 0, (args, out.output)
        if args[0] == "train":
            last_run = re.search(r"run dir\s+(\S+)", out.stdout).group(1)
            if "--max-seed-params" in args:  # the README's growing run
                assert re.search(r"germinated [1-9]\d*\s+fossilized [1-9]", out.stdout), out.stdout
    assert (tmp_path / last_run / "model.pt2").is_file()
    assert (tmp_path / "runs" / "comparison.png").is_file()


def test_every_markdown_file_the_code_and_docs_cite_is_in_the_repository():
    root = README.parent
    sources = [README, *root.glob("docs/*.md"), *root.glob("src/**/*.py"), *root.glob("benchmarks/*.py")]
    cited = {
        (source.relative_to(root), name)
        for source in sources
        for name in re.findall(r"[\w./-]*\b[A-Za-z_-]+\.md\b", source.read_text(encoding="utf-8"))
    }
    names = {p.name for p in root.rglob("*.md")}
    assert [c for c in cited if Path(c[1]).name not in names] == []

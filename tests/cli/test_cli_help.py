"""Every command's --help: torch-free and fast, complete (the options the README promises), and
readable (no short help cut off, no reST markup)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from esper.cli.main import cli

README = Path(__file__).parents[2] / "README.md"


def _commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group``, the group itself included."""
    paths = [path]
    for name, command in group.commands.items():
        paths += _commands(command, (*path, name)) if isinstance(command, click.Group) else [(*path, name)]
    return paths


COMMANDS = _commands()


def test_every_command_is_added_to_a_group_and_the_tree_is_complete():
    assert {" ".join(p) for p in COMMANDS} >= {
        "", "train", "train heuristic", "train static", "train random", "train policy", "train ppo",
        "eval", "report", "export",
    }  # fmt: skip


def test_no_help_imports_torch():
    code = (
        "import sys\n"
        "from esper.cli.main import cli\n"
        f"for path in {COMMANDS!r}:\n"
        "    try:\n"
        "        cli.main(args=[*path, '--help'], prog_name='esper', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'gymnasium', 'matplotlib', 'numpy') if m in sys.modules]\n"
        "print('LOADED', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "LOADED []"


def test_the_command_modules_import_no_each_other_in_a_circle():
    # rl.py is a plain module of commands: importing it alone neither needs nor loads main.py
    code = "import sys, esper.cli.rl; print('esper.cli.main' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "esper")
def test_help_is_complete_and_readable(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="esper")
    assert result.exit_code == 0, result.output
    assert "``" not in result.output  # reST markup shows up verbatim in a terminal
    listing = result.output.split("Commands:")[-1] if "Commands:" in result.output else ""
    assert not [line for line in listing.splitlines() if line.rstrip().endswith("...")], listing


def _readme_shared_options() -> list[str]:
    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("`esper train` has one subcommand") :].split("\n\n")[0]
    return re.findall(r"`(--[a-z-]+(?:/--[a-z-]+)?)", paragraph)


def test_train_help_lists_the_shared_options_the_readme_promises():
    promised = _readme_shared_options()
    assert len(promised) >= 15 and "--max-seed-params" in promised
    output = CliRunner().invoke(cli, ["train", "--help"]).output
    shared = output[output.index("Options every train command shares") :]
    listed = re.findall(r"--[a-z-]+(?:/--[a-z-]+)?", shared)
    missing = [o for o in promised if not any(o == flag or flag.startswith(o + "/") for flag in listed)]
    assert not missing
    assert "Examples:" in output

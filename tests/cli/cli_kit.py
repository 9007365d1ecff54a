"""Running the ``esper`` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TINY = ("--task", "digits-impaired", "--epochs", "3", "--quiet")
"""A run of a few seconds: the undersized digits host for three epochs, no live view."""


def esper_env() -> dict[str, str]:
    # One passive OpenMP thread: two spinning threads on a busy 2-core machine stall badly.
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def esper_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m esper.cli.main``."""
    script = Path(sys.executable).with_name("esper")
    if script.is_file():
        return [str(script)]
    found = shutil.which("esper")
    return [found] if found else [sys.executable, "-m", "esper.cli.main"]


def run_esper(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*esper_command(), *args],
        cwd=cwd,
        env=esper_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_esper(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*esper_command(), *args],
        cwd=cwd,
        env=esper_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

"""Subprocess smoke tests of `esper train policy`, `esper eval`, `esper train ppo` (resume, Ray address)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_kit import popen_esper, run_esper

from esper.kasmina.blueprints import BlueprintRegistry
from esper.tamiyo.features import feature_size
from esper.tamiyo.masks import ActionLayout
from esper.tamiyo.policy_net import FactoredPolicy, save_policy

pytestmark = pytest.mark.slow


def _esper(*args):
    cmd = [sys.executable, "-c", "from esper.cli.main import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_train_policy_and_eval(tmp_path):
    names = tuple(BlueprintRegistry.names("cnn"))
    layout = ActionLayout(("r0c0", "r0c1"), names)
    save_policy(
        FactoredPolicy(feature_size(2, len(names)), layout.head_sizes, hidden=8), tmp_path / "policy.pt"
    )
    run = _esper("train", "policy", "--policy", str(tmp_path / "policy.pt"), "--task", "digits-impaired",
                 "--epochs", "2", "--out", str(tmp_path / "run"), "-q")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "summary.json").is_file()
    ev = _esper("eval", "--controller", str(tmp_path / "policy.pt"), "--task", "digits-impaired",
                "--episodes", "2", "--epochs", "1", "--out", str(tmp_path / "eval"))  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert "+-" in ev.stdout and (tmp_path / "eval" / "eval.json").is_file()
    bad = _esper("eval", "--controller", "nonsense", "--episodes", "1")
    assert bad.returncode != 0 and "neither" in (bad.stderr + bad.stdout)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc), to end what a SIGKILLed driver leaves behind."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_killed_ppo_run_resumes_from_its_last_round(tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray", reason="Ray is not installed (pip install 'esper[ray]')")
    out = tmp_path / "ppo"
    args = ("--task", "digits-impaired", "--envs", "1", "--episode-length", "2", "--out", str(out), "-q",
            "--backend", backend)  # fmt: skip
    proc = popen_esper("train", "ppo", "--rounds", "500", *args)
    left: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while not (out / "ppo_checkpoint.pt").is_file():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the PPO run did not get going"
            time.sleep(0.05)
        time.sleep(0.5)  # let it get into a later round, so the kill lands mid-round
    finally:
        left = _descendants(proc.pid)  # a local Ray runtime's processes
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        for pid in left:  # Ray 2.60 leaves its agents running when the driver is killed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    saved = torch.load(out / "ppo_checkpoint.pt", weights_only=True)  # never half-written
    done = len(saved["history"])  # rounds finished
    assert done >= 1
    torch.load(out / "policy.pt", weights_only=True)
    result = run_esper("train", "ppo", "--rounds", str(done + 2), "--resume", *args)
    assert result.returncode == 0, result.stderr
    assert len(torch.load(out / "ppo_checkpoint.pt", weights_only=True)["history"]) == done + 2
    rounds = [json.loads(line)["round"] for line in (out / "events.jsonl").read_text().splitlines()
              if '"ppo_update"' in line]  # fmt: skip
    assert rounds[-2:] == [done, done + 1]  # the resumed rounds, counted from 0


def test_cli_unreachable_address_fails_fast_with_exit_2(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'esper[ray]')")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    result = run_esper("train", "ppo", "--backend", "ray", "--address", f"127.0.0.1:{port}",
                       "--out", str(tmp_path / "run"), "-q", timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"no Ray cluster answers at address '127.0.0.1:{port}'" in result.stderr
    assert time.monotonic() - start < 60  # the CLI's imports included; Ray alone would retry for minutes
    assert not (tmp_path / "run").exists()

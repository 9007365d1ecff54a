"""Subprocess smoke tests of `esper train policy` and `esper eval` (`train ppo`: test_training.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

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


def test_a_killed_ppo_run_resumes_from_its_last_round(tmp_path):
    out = tmp_path / "ppo"
    args = ("--task", "digits-impaired", "--envs", "1", "--episode-length", "2", "--out", str(out), "-q")
    proc = popen_esper("train", "ppo", "--rounds", "500", *args)
    try:
        deadline = time.monotonic() + 180
        while not (out / "ppo_checkpoint.pt").is_file():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the PPO run did not get going"
            time.sleep(0.05)
        time.sleep(0.5)  # let it get into a later round, so the kill lands mid-round
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
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

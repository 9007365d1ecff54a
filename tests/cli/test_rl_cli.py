"""Subprocess smoke tests of `esper train policy` and `esper eval` (`train ppo`: test_training.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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

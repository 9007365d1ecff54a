"""The run folder: written only by its own kind, one writer at a time, resumes that change nothing
they should not, and runs killed at any moment that can still be finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from esper.cli.main import cli
from esper.errors import ConfigError
from esper.recipes.ppo import run_ppo
from esper.recipes.run_dir import LOCK_NAME, MARKER_NAME, RunDir, RunDirLockedError
from esper.recipes.train import run_training
from esper.simic.training import PPORunConfig
from esper.tamiyo.factory import make_controller
from esper.tolaria.config import RESUMABLE, RunConfig


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="esper")


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def _copy_run(source: Path, target: Path) -> Path:
    target.mkdir()
    for p in source.iterdir():
        if p.is_file():
            (target / p.name).write_bytes(p.read_bytes())
    return target


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch heuristic run (tests copy it before touching it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    config = RunConfig(task="digits-impaired", epochs=2, quiet=True, out=str(out))
    run_training(config, make_controller(config))
    return out


def _tiny_ppo(out: Path, **changes: object) -> PPORunConfig:
    base: dict[str, object] = dict(
        rounds=1, envs=1, episode_length=2, minibatch_size=2, ppo_epochs=1, quiet=True, out=str(out)
    )
    return PPORunConfig(**{**base, **changes})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- 1. kind
def test_a_fresh_run_is_marked_with_its_kind(tmp_path: Path) -> None:
    with RunDir.open(tmp_path / "run", kind="train", config={"seed": 0}) as folder:
        assert folder.path == tmp_path / "run"
    marker = json.loads((tmp_path / "run" / MARKER_NAME).read_text())
    assert marker["kind"] == "train" and marker["config"] == {"seed": 0}
    assert marker["torch_threads"] == torch.get_num_threads()


@pytest.mark.parametrize(
    "artifact", ["events.jsonl", "summary.json", "config.json", "policy.pt", "eval.json"]
)
def test_any_esper_artifact_refuses_a_fresh_run(tmp_path: Path, artifact: str) -> None:
    (tmp_path / artifact).write_text("{}")
    before = _listing(tmp_path)
    with pytest.raises(ConfigError, match=f"already holds a run.*{artifact}"):
        RunDir.open(tmp_path, kind="train")
    assert _listing(tmp_path) == before


def test_a_ppo_run_never_writes_into_a_heuristic_run(tmp_path: Path, finished_run: Path) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    before = _listing(run)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_ppo(_tiny_ppo(run))
    with pytest.raises(ConfigError, match="holds a 'train' run, not a 'ppo' run"):
        run_ppo(_tiny_ppo(run), resume=True)
    assert _listing(run) == before


def test_a_heuristic_run_never_writes_into_a_folder_with_only_an_event_log(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text('{"event": "run_started"}\n')
    before = _listing(tmp_path)
    result = _invoke("train", "heuristic", "--task", "digits-impaired", "--epochs", "1", "-q",
                     "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "already holds a run" in result.stderr and "Traceback" not in result.output
    assert _listing(tmp_path) == before


def test_a_resume_of_another_kind_is_refused(tmp_path: Path) -> None:
    with RunDir.open(tmp_path, kind="ppo"):
        pass
    with pytest.raises(ConfigError, match="holds a 'ppo' run, not a 'train' run"):
        RunDir.open(tmp_path, kind="train", resume=True)


def test_a_failed_fresh_run_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError), RunDir.open(tmp_path / "run", kind="train"):
        raise ConfigError("the data is missing")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 3. one writer
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from esper.recipes.run_dir import RunDir
    with RunDir.open(sys.argv[1], kind="train"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / "run")
    try:
        with pytest.raises(RunDirLockedError, match=f"PID {holder.pid}"):
            RunDir.open(tmp_path / "run", kind="train", resume=True)
        config = RunConfig(task="digits-impaired", epochs=1, quiet=True, out=str(tmp_path / "run"))
        with pytest.raises(RunDirLockedError, match="another Esper process"):
            run_training(config, make_controller(config))
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_writer_does_not_block_a_resume(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # the stale lock file is still there
    with RunDir.open(tmp_path / "run", kind="train", resume=True):
        assert (tmp_path / "run" / LOCK_NAME).read_text().strip() == str(os.getpid())


# ----------------------------------------------------------------------------- 4. what a resume may change
def test_a_resume_refuses_every_change_outside_the_resumable_list(tmp_path: Path) -> None:
    with RunDir.open(tmp_path, kind="train", config={"lr": 0.1, "seed": 0, "epochs": 2}):
        pass
    before = _listing(tmp_path)
    with pytest.raises(ConfigError) as info:
        RunDir.open(tmp_path, kind="train", resume=True, config={"lr": 0.5, "seed": 3, "epochs": 4},
                    resumable=frozenset({"epochs"}))  # fmt: skip
    assert "lr: saved 0.1, given 0.5" in str(info.value) and "seed: saved 0, given 3" in str(info.value)
    assert "epochs" not in str(info.value).split("may change")[0]
    assert _listing(tmp_path) == before
    with RunDir.open(tmp_path, kind="train", resume=True, config={"lr": 0.1, "seed": 0, "epochs": 4},
                     resumable=frozenset({"epochs"})):  # fmt: skip
        pass
    assert json.loads((tmp_path / MARKER_NAME).read_text())["config"]["epochs"] == 4


def test_run_training_resume_with_another_lr_and_seed_is_refused(tmp_path: Path, finished_run: Path) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    config = RunConfig(task="digits-impaired", epochs=3, quiet=True, out=str(run), lr=0.5, seed=7)
    before = _listing(run)
    with pytest.raises(ConfigError, match=r"seed: saved 0, given 7[\s\S]*lr: saved None, given 0.5"):
        run_training(config, make_controller(config), resume=True)
    assert _listing(run) == before


def test_train_policy_resume_cannot_swap_the_policy(tmp_path: Path) -> None:
    from esper.kasmina.blueprints import BlueprintRegistry
    from esper.tamiyo.features import feature_size
    from esper.tamiyo.masks import ActionLayout
    from esper.tamiyo.policy_net import FactoredPolicy, save_policy

    names = tuple(BlueprintRegistry.names("cnn"))
    layout = ActionLayout(("r0c0", "r0c1"), names)
    paths = []
    for name in ("a.pt", "b.pt"):
        save_policy(FactoredPolicy(feature_size(2, len(names)), layout.head_sizes, hidden=8), tmp_path / name)
        paths.append(str(tmp_path / name))
    run = tmp_path / "run"
    args = ("--task", "digits-impaired", "-q")
    first = _invoke("train", "policy", "--policy", paths[0], *args, "--epochs", "1", "--out", str(run))
    assert first.exit_code == 0, first.output
    before = _listing(run)
    result = _invoke("train", "policy", "--policy", paths[1], "--resume", str(run), "--epochs", "2")
    assert result.exit_code == 2, result.output
    assert f"policy: saved {paths[0]!r}, given {paths[1]!r}" in result.stderr
    assert _listing(run) == before


def test_the_documented_resumable_lists_are_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    from esper.simic.training import RESUMABLE as PPO_RESUMABLE

    for name in sorted(RESUMABLE | PPO_RESUMABLE):
        assert f"`{name}`" in readme, name


# ----------------------------------------------------------------------------- 5. finishing a killed run
def test_a_run_killed_before_its_summary_is_finished_by_a_resume(tmp_path: Path, finished_run: Path) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "summary.json").unlink()
    (run / "report.png").unlink()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    result = _invoke("train", "heuristic", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    assert (run / "report.png").is_file()
    assert not list(run.glob("*.tmp"))
    assert _invoke("report", str(run), "--out", str(tmp_path / "comparison.png")).exit_code == 0


def test_a_summarised_run_still_needs_more_epochs_to_resume(finished_run: Path) -> None:
    result = _invoke("train", "heuristic", "--resume", str(finished_run))
    assert result.exit_code == 2 and "already trained 2 of its 2 epochs" in result.stderr


def test_resume_removes_leftover_tmp_files(tmp_path: Path) -> None:
    with RunDir.open(tmp_path, kind="ppo"):
        pass
    (tmp_path / ".ppo_checkpoint.pt.x1.tmp").write_bytes(b"x")
    assert RunDir.is_summarised(tmp_path) is False
    with RunDir.open(tmp_path, kind="ppo", resume=True):
        assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------- 9. threads
def test_a_resume_with_another_thread_count_warns_and_uses_the_recorded_one(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    with RunDir.open(tmp_path, kind="train"):
        pass
    try:
        torch.set_num_threads(threads + 1)
        with (
            pytest.warns(RuntimeWarning, match=f"{threads} intra-op threads.*{threads + 1}"),
            RunDir.open(tmp_path, kind="train", resume=True),
        ):
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(threads)


def test_the_summary_records_the_thread_count(finished_run: Path) -> None:
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["torch_threads"] == torch.get_num_threads()

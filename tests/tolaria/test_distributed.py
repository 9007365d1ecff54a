"""Data-parallel training on 2 CPU ranks (gloo): identical ranks through growth, the same
result as 1 rank, the divergence the re-wrap prevents, a killed rank, and bad launches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from ddp_kit import GLOBAL_BATCH, SCENARIOS, load, run_scenario, spawn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from esper.cli.main import cli
from esper.data import ArraySplit
from esper.errors import DistributedError
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage
from esper.tolaria.checkpoint import load_checkpoint
from esper.tolaria.data import TaskBatches
from esper.tolaria.distributed import Communicator, Launch, shard_data


# ----------------------------------------------------------------------------- shards (no group)
def _rows(batches) -> list[int]:
    return [int(v) for _, y in batches for v in y]


@pytest.mark.parametrize("n", [96, 101])
def test_task_batch_shards_split_the_one_rank_epoch(n: int) -> None:
    split = ArraySplit(torch.zeros(n, 1), torch.arange(n))
    one = TaskBatches(split, 2 * 8, torch.device("cpu"), seed=3)
    train = [TaskBatches(split, 8, torch.device("cpu"), seed=3).sharded(r, 2, even=True) for r in (0, 1)]
    val = [TaskBatches(split, 8, torch.device("cpu"), seed=None).sharded(r, 2, even=False) for r in (0, 1)]
    for shards in (train, val):
        for s in shards:
            s.set_epoch(4)
    one.set_epoch(4)
    # Training: the same steps on both ranks, equal batches, the 1-rank order less n % 2 rows.
    assert len(train[0]) == len(train[1]) == len(list(train[0])) == len(list(train[1]))
    assert [len(y) for _, y in train[0]] == [len(y) for _, y in train[1]]
    union = sorted(_rows(train[0]) + _rows(train[1]))
    assert union == sorted(_rows(one)[: n - n % 2])
    for (_, y0), (_, y1), (_, y) in zip(train[0], train[1], one, strict=False):
        assert sorted([*y0.tolist(), *y1.tolist()]) == sorted(y[: len(y) - len(y) % 2].tolist())
    # Validation: every example once.
    assert sorted(_rows(val[0]) + _rows(val[1])) == list(range(n))
    assert [len(v) for v in val] == [len(list(v)) for v in val]


def test_a_dataloader_is_split_by_a_distributed_sampler_for_training_and_whole_for_validation() -> None:
    data = TensorDataset(torch.zeros(41, 1), torch.arange(41))
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    train = [shard_data(loader, r, 2, train=True) for r in (0, 1)]
    assert all(isinstance(t, DataLoader) and isinstance(t.sampler, DistributedSampler) for t in train)
    rows = [_rows(t) for t in train]
    assert len(rows[0]) == len(rows[1]) == 20 and not set(rows[0]) & set(rows[1])
    val = [shard_data(DataLoader(data, batch_size=4), r, 2, train=False) for r in (0, 1)]
    assert sorted(_rows(val[0]) + _rows(val[1])) == list(range(41))
    batches = [(torch.zeros(1), torch.tensor([i])) for i in range(5)]
    assert _rows(shard_data(batches, 1, 2, train=True)) == [1, 3]  # whole batches; the 5th left out


def test_more_ranks_than_batches_and_unsplittable_data_are_clear_errors() -> None:
    with pytest.raises(DistributedError, match=r"world size 4 is larger than the 3 batch\(es\)"):
        shard_data([(torch.zeros(1), torch.zeros(1))] * 3, 0, 4, train=True)
    with pytest.raises(DistributedError, match="cannot split a generator"):
        shard_data((b for b in []), 0, 2, train=False)
    with pytest.raises(DistributedError, match="RANK=2, WORLD_SIZE=2"):
        Launch.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="WORLD_SIZE='two'"):
        Launch.from_env({"WORLD_SIZE": "two"})


def test_an_action_crosses_processes_as_primitives() -> None:
    action = Action(
        LifecycleOp.GERMINATE,
        slot="r0c1",
        blueprint="conv_light",
        alpha_algorithm=AlphaAlgorithm.GATE,
        alpha_curve=AlphaCurve.SIGMOID,
        tempo_epochs=8,
        alpha_target=0.5,
    )
    assert Action.from_dict(action.to_dict()) == action
    assert Action.from_dict(json.loads(json.dumps(Action(LifecycleOp.WAIT).to_dict()))) == Action(
        LifecycleOp.WAIT
    )


# ----------------------------------------------------------------------------- 2 ranks (spawn)
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scenario of ``ddp_kit.SCENARIOS`` once, on 2 gloo ranks."""
    out = tmp_path_factory.mktemp("ddp")
    spawn(2, out, timeout=150)
    return out


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert sorted(a) == sorted(b)
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "stages"),
    [
        ("lifecycle", ("GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED", "PRUNED")),
        ("width", ("GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED")),
    ],
)
def test_ranks_stay_bit_identical_through_the_whole_lifecycle(
    two_ranks: Path, scenario: str, stages: tuple[str, ...]
) -> None:
    r0, r1 = load(two_ranks, scenario, 0), load(two_ranks, scenario, 1)
    visited = {SeedStage(s) for epoch in r0["stages"] for s in epoch.values()}
    for stage in stages:
        assert SeedStage[stage] in visited, stage
    assert r0["stages"] == r1["stages"] and r0["history"] == r1["history"]
    for epoch, (a, b) in enumerate(zip(r0["states"], r1["states"], strict=True)):
        assert _differing(a, b) == [], f"epoch {epoch}"  # parameters and buffers (BatchNorm)


@pytest.mark.slow
def test_the_own_loop_grower_keeps_ranks_identical(two_ranks: Path) -> None:
    """A user's loop through ``grower.forward_model``, each rank its own losses."""
    r0, r1 = load(two_ranks, "grower", 0), load(two_ranks, "grower", 1)
    assert r0["stages"] == r1["stages"]
    assert {SeedStage(s) for e in r0["stages"] for s in e.values()} >= {SeedStage.BLENDING}
    for epoch, (a, b) in enumerate(zip(r0["states"], r1["states"], strict=True)):
        assert _differing(a, b) == [], f"epoch {epoch}"


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_the_same_global_batch(two_ranks: Path) -> None:
    """2 ranks x 16 examples against 1 rank x 32, on a model without batch statistics (so the
    math is the same: DDP averages the two half-batch mean gradients into the 32-example mean).
    Only float rounding differs (summation order), so the tolerance is: every metric within
    1e-5 and every parameter within 1e-4 after 7 epochs of growth; accuracy exactly."""
    model, rewrap, epochs, script = SCENARIOS["equivalence"]
    torch.manual_seed(0)
    one = run_scenario(Communicator(torch.device("cpu")), model, rewrap, epochs, script)
    two = load(two_ranks, "equivalence", 0)
    assert one["stages"] == two["stages"]
    visited = {SeedStage(s) for e in one["stages"] for s in e.values()}
    assert visited >= {SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING}
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert h1["val_accuracy"] == h2["val_accuracy"] and h1["train_accuracy"] == h2["train_accuracy"]
        assert h1["val_loss"] == pytest.approx(h2["val_loss"], abs=1e-5)
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], abs=1e-5)
    assert one["final"] == pytest.approx(two["final"], abs=1e-5)
    last1, last2 = one["states"][-1], two["states"][-1]
    for name, value in last1.items():
        assert torch.allclose(value.double(), last2[name].double(), atol=1e-4, rtol=0), name
    assert GLOBAL_BATCH == 32


@pytest.mark.slow
def test_without_the_rewrap_seed_parameters_drift_apart(two_ranks: Path) -> None:
    """The negative control: DDP wrapped once, before growth, leaves seeds unsynchronised."""
    r0, r1 = load(two_ranks, "stale", 0), load(two_ranks, "stale", 1)
    last = _differing(r0["states"][-1], r1["states"][-1])
    assert last and all(".seed." in k for k in last), last  # the host stays synchronised
    worst = max((r0["states"][-1][k] - r1["states"][-1][k]).abs().max().item() for k in last)
    assert worst > 1e-3


# ----------------------------------------------------------------------------- torchrun
def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "esper", "train", "heuristic", *args]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _rank_pids(launcher: int) -> dict[int, int]:
    """The launcher's child processes by their RANK (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if not entry.name.isdigit() or parent != launcher:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        ranks = [int(v[5:]) for v in env if v.startswith(b"RANK=")]
        if ranks:
            found[ranks[0]] = int(entry.name)
    return found


def _epochs_logged(run_dir: Path) -> int:
    events = run_dir / "events.jsonl"
    return events.read_text().count('"epoch_end"') if events.exists() else 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc (Linux)")
def test_a_killed_rank_stops_the_job_and_resume_continues(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ("--task", "digits-impaired", "--epochs", "30", "--batch-size", "16", "--quiet", "--device", "cpu")
    job = subprocess.Popen(
        _torchrun(*args, "--out", str(run_dir)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while _epochs_logged(run_dir) < 2 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.poll() is None, "the run ended before a rank could be killed"
        logged = _epochs_logged(run_dir)
        os.kill(_rank_pids(job.pid)[1], signal.SIGKILL)
        _, err = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode != 0
    assert "rank      : 1" in err and "SIGKILL" in err, err[-2000:]  # the launcher names the lost rank
    saved = load_checkpoint(run_dir)  # intact: written atomically by rank 0
    # The epoch's checkpoint follows its epoch_end event: the kill may land in between.
    assert logged - 1 <= saved["epoch"] < 30 and not (run_dir / "summary.json").exists()

    resume = _torchrun("--resume", str(run_dir), "--quiet")
    done = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 30 and summary["world_size"] == 2
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert done.stdout.count("val accuracy") == 1  # one summary, from rank 0


# ----------------------------------------------------------------------------- bad launches
@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "1"}, ("--device", "cuda"), "CUDA is not available"),
        ({"WORLD_SIZE": "64", "RANK": "0"}, ("--batch-size", "512"), "world size 64 is larger than the 3"),
    ],
)
def test_a_launch_that_cannot_work_fails_fast_and_leaves_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for key, value in {**env, "LOCAL_RANK": env["RANK"]}.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["train", "heuristic", "--task", "digits-impaired", "--quiet", "--out", str(run_dir), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not run_dir.exists()


def test_a_resume_on_another_number_of_ranks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The global batch depends on the world size, so it is one of the run's fixed settings."""
    run_dir = tmp_path / "run"
    args = ("--task", "digits-impaired", "--quiet", "--epochs", "1", "--batch-size", "256")
    first = CliRunner().invoke(cli, ["train", "static", *args, "--out", str(run_dir)])
    assert first.exit_code == 0, first.output
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    resume = ["train", "static", "--resume", str(run_dir), "--epochs", "2", "--quiet"]
    result = CliRunner().invoke(cli, resume)
    assert result.exit_code == 2, result.output
    assert "world_size: saved 1, given 2" in result.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir()) == before

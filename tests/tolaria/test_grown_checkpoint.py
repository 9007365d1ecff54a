"""Checkpoints: atomic save, weights_only load, clear errors, and esper.load_grown."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tolaria_kit import grow

import esper
from esper import CNNHost, MorphogeneticModel, QualityGates
from esper.errors import CheckpointError
from esper.leyline.stages import SeedStage
from esper.tolaria.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    load_checkpoint,
    load_grown,
    save_checkpoint,
)

X = torch.randn(3, 1, 8, 8)


def _grown() -> MorphogeneticModel:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    grow(model, "r0c0", "conv_light", SeedStage.FOSSILIZED, X)
    grow(model, "r0c1", "attention", SeedStage.BLENDING, X)
    with torch.no_grad():
        for p in model.get_seed_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _save(model: MorphogeneticModel, path: Path) -> Path:
    return save_checkpoint(path, {"model_config": model.config(), "model": model.state_dict(), "epoch": 4})


def test_load_grown_is_part_of_the_top_level_api() -> None:
    assert esper.load_grown is load_grown and "load_grown" in esper.__all__


def test_load_grown_rebuilds_the_model_from_the_checkpoint_alone(tmp_path: Path) -> None:
    model = _grown()
    _save(model, tmp_path / CHECKPOINT_NAME)
    for where in (tmp_path, tmp_path / CHECKPOINT_NAME):
        loaded = esper.load_grown(where)
        assert not loaded.training
        assert [s.stage for s in loaded.slots()] == [SeedStage.FOSSILIZED, SeedStage.BLENDING]
        assert [s.state.blueprint_id for s in loaded.slots()] == ["conv_light", "attention"]
        assert loaded.slot("r0c1").alpha == model.slot("r0c1").alpha
        with torch.no_grad():
            torch.testing.assert_close(loaded(X), model(X), rtol=0, atol=0)


def test_save_is_atomic_and_load_is_weights_only(tmp_path: Path) -> None:
    path = _save(_grown(), tmp_path / CHECKPOINT_NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left
    data = torch.load(path, weights_only=True)
    assert data["epoch"] == 4 and data["format"] == load_checkpoint(path)["format"]


def test_missing_checkpoint_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*checkpoint\.pt"):
        load_grown(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"])
def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path)


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = _save(_grown(), tmp_path / CHECKPOINT_NAME)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_grown(tmp_path)


def test_a_foreign_file_is_not_taken_for_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="not an Esper checkpoint"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_without_a_model_says_so(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {"epoch": 1})
    with pytest.raises(CheckpointError, match="has no model"):
        load_grown(tmp_path)


# ----------------------------------------------------------------------------- crafted files
_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # a crafted file must not get near this
from esper.errors import CheckpointError
from esper.tamiyo.policy_net import load_policy
from esper.tolaria.checkpoint import load_grown
loader = {"policy": load_policy, "grown": load_grown}[sys.argv[1]]
try:
    loader(sys.argv[2])
except CheckpointError as exc:
    print("refused:", exc)
"""


def _load_limited(kind: str, path: Path) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _LIMITED, kind, str(path)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_crafted_policy_cannot_allocate_what_its_config_claims(tmp_path: Path) -> None:
    from esper.tamiyo.masks import ActionLayout
    from esper.tamiyo.policy_net import FactoredPolicy, save_policy

    heads = ActionLayout(("r0c0", "r0c1"), ("noop", "norm")).head_sizes
    save_policy(FactoredPolicy(8, heads, hidden=4), tmp_path / "policy.pt")
    blob = torch.load(tmp_path / "policy.pt", weights_only=True)
    for claim in ({"hidden": 10**6}, {"hidden": 50_000}, {"lstm": True, "lstm_hidden": 10**6}):
        torch.save({**blob, "config": {**blob["config"], **claim}}, tmp_path / "crafted.pt")
        out = _load_limited("policy", tmp_path / "crafted.pt")
        assert out.startswith("refused:"), out
        assert "crafted.pt" in out and ("hidden" in out or "holds" in out)


def test_a_crafted_checkpoint_cannot_allocate_what_its_model_config_claims(tmp_path: Path) -> None:
    model = MorphogeneticModel(CNNHost(num_classes=10, base_channels=4, in_channels=1))
    data = {"format": CHECKPOINT_FORMAT, "model_config": model.config(), "model": model.state_dict()}
    data["model_config"]["host"]["base_channels"] = 10**6
    torch.save(data, tmp_path / "checkpoint.pt")
    out = _load_limited("grown", tmp_path)
    assert out.startswith("refused:") and "checkpoint.pt" in out, out
    assert "shape" in out


def test_torch_load_errors_never_suggest_weights_only_false(tmp_path: Path) -> None:
    import os

    torch.save({"format": CHECKPOINT_FORMAT, "evil": os.system}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError) as info:
        load_grown(tmp_path)
    message = str(info.value)
    assert "system" in message and "checkpoint.pt" in message
    assert "False" not in message, message

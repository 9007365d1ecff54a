"""Grower: growth from a plain PyTorch loop, with the user's optimizer, events and checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import esper
from esper.errors import ConfigError
from esper.leyline.actions import WAIT, Action, LifecycleOp
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage


class Net(nn.Module):
    """A small torchvision-style CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer1(self.stem(x)).mean(dim=(2, 3)))


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 4, 4] > 0).long()
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=32, shuffle=True, generator=g)
    return train, DataLoader(TensorDataset(x[96:], y[96:]), batch_size=32)


class Walk:
    """Germinate in ``layer1`` at once, then advance whenever a gate passes, and fossilize."""

    name = "walk"

    def decide(self, obs: Observation) -> Action:
        slot = obs.slot("layer1")
        if slot.stage == SeedStage.DORMANT:
            return Action(LifecycleOp.GERMINATE, slot="layer1", blueprint="conv_light", tempo_epochs=2)
        if slot.stage == SeedStage.HOLDING and slot.gate_ready:
            return Action(LifecycleOp.FOSSILIZE, slot="layer1")
        if slot.gate_ready:
            return Action(LifecycleOp.ADVANCE, slot="layer1")
        return WAIT

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def _grower(tmp_path: Path | None, opt_kind: str = "sgd") -> tuple[esper.Grower, torch.optim.Optimizer]:
    torch.manual_seed(1)
    gates = esper.QualityGates(min_training_epochs=1, min_holding_epochs=0, min_fossilize_contribution=-1.0)
    model = esper.inject_slots(Net(), ["layer1"], example_input=torch.zeros(2, 1, 8, 8), gates=gates)
    if opt_kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, val = _loaders()
    grower = esper.Grower(model, opt, controller=Walk(), val_data=val, epochs=8, run_dir=tmp_path)
    return grower, opt


def _epoch(grower: esper.Grower, opt: torch.optim.Optimizer, train: DataLoader) -> float:
    model = grower.model
    model.train()
    total = 0.0
    for x, y in train:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        total += loss.item()
    return total / len(train)


@pytest.mark.parametrize("opt_kind", ["sgd", "adamw"])
def test_a_plain_loop_grows_and_fossilizes_a_seed_in_the_users_optimizer(
    tmp_path: Path, opt_kind: str
) -> None:
    grower, opt = _grower(tmp_path / "run", opt_kind)
    train, _ = _loaders()
    stages = []
    with grower:
        for _ in range(6):
            grower.step(train_loss=_epoch(grower, opt, train))
            stages.append(grower.model.slot("layer1").stage)
            held = {id(p) for g in opt.param_groups for p in g["params"]}
            assert held == {id(p) for p in grower.model.parameters()}  # the user's optimizer follows
    assert SeedStage.BLENDING in stages and stages[-1] == SeedStage.FOSSILIZED
    events = [
        json.loads(line)["event"] for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    ]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert {"seed_germinated", "seed_fossilized", "epoch_end"} <= set(events)
    from esper.karn.report import write_report

    assert write_report(tmp_path / "run").is_file()  # report.png from the own loop's events


def test_grower_state_restores_model_optimizer_and_lifecycle_exactly() -> None:
    train, _ = _loaders()
    straight, s_opt = _grower(None)
    for _ in range(5):
        straight.step(train_loss=_epoch(straight, s_opt, train))

    first, f_opt = _grower(None)
    train_b, _ = _loaders()
    for _ in range(3):
        first.step(train_loss=_epoch(first, f_opt, train_b))
    saved = copy.deepcopy(first.state_dict())
    rng, loader_gen = torch.get_rng_state(), train_b.generator.get_state()

    resumed, r_opt = _grower(None)  # a freshly built model and optimizer, without the seed
    resumed.load_state_dict(saved)
    assert resumed.model.slot("layer1").stage == first.model.slot("layer1").stage
    assert len(r_opt.param_groups) == len(f_opt.param_groups)
    torch.set_rng_state(rng)
    train_b.generator.set_state(loader_gen)
    for _ in range(2):
        resumed.step(train_loss=_epoch(resumed, r_opt, train_b))
    assert resumed.engine.history == straight.engine.history
    for k, v in straight.model.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_an_evaluate_function_measures_contributions() -> None:
    _, val = _loaders()
    calls = []

    def evaluate(model: torch.nn.Module) -> float:
        calls.append(1)
        hits = sum((model(x).argmax(-1) == y).sum().item() for x, y in val)
        return hits / 32

    torch.manual_seed(1)
    model = esper.inject_slots(Net(), ["layer1"], example_input=torch.zeros(2, 1, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grower = esper.Grower(model, opt, controller="static", evaluate=evaluate, epochs=2)
    report = grower.step()
    assert report.val_loss is None and 0.0 <= report.val_accuracy <= 1.0 and len(calls) == 1


def test_an_optimizer_that_misses_the_model_is_refused() -> None:
    model = esper.inject_slots(Net(), ["layer1"], example_input=torch.zeros(2, 1, 8, 8))
    _, val = _loaders()
    with pytest.raises(ConfigError, match="does not hold"):
        esper.Grower(model, torch.optim.SGD(Net().parameters(), lr=0.1), val_data=val, epochs=2)

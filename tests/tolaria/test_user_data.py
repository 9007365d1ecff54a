"""The engine on a user's DataLoader, optimizer and schedule: growth, exact resume, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from esper import CNNHost, MorphogeneticModel, QualityGates
from esper.errors import ConfigError, ShapeError
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.stages import SeedStage
from esper.tolaria.data import BatchError
from esper.tolaria.engine import Engine, EngineConfig


def _data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return TensorDataset(x, y)


def _model() -> MorphogeneticModel:
    torch.manual_seed(0)
    host = CNNHost(num_classes=4, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    return MorphogeneticModel(host, gates=QualityGates(min_training_epochs=1, min_holding_epochs=0))


def _engine(optimizer=None, scheduler=None, loader_seed: int = 5, **kw) -> Engine:
    train = DataLoader(
        _data(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(loader_seed)
    )
    val = DataLoader(_data(48, seed=1), batch_size=16)
    return Engine(
        _model(), train, val, EngineConfig(epochs=8, **kw), optimizer=optimizer, scheduler=scheduler
    )


def _grow(engine: Engine) -> None:
    """Germinate, then walk the seed to BLENDING through the door."""
    for op in (LifecycleOp.GERMINATE, LifecycleOp.ADVANCE, LifecycleOp.ADVANCE):
        engine.train_epoch()
        outcome = engine.apply(Action(op, slot="r0c1", blueprint="conv_light", tempo_epochs=3))
        assert outcome.applied, outcome


SGD = lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9)  # noqa: E731
COSINE = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)  # noqa: E731


@pytest.mark.parametrize(
    ("optimizer", "scheduler"), [(None, None), (SGD, None), (SGD, COSINE), (None, COSINE)]
)
def test_a_dataloader_and_a_user_optimizer_grow_a_seed(optimizer, scheduler) -> None:
    engine = _engine(optimizer, scheduler)
    _grow(engine)
    assert engine.model.slot("r0c1").stage == SeedStage.BLENDING
    seed_group = engine.groups.seed_groups()["r0c1"]
    before = [p.detach().clone() for p in seed_group["params"]]
    engine.train_epoch()
    assert any(not torch.equal(a, p) for a, p in zip(before, seed_group["params"], strict=True))
    if scheduler is not None:
        lrs = {round(g["lr"], 12) for g in engine.optimizer.param_groups}
        assert len(lrs) == 1 and lrs.pop() < 0.05  # host and seed follow the same decayed schedule


def test_dict_batches_are_read_by_their_keys() -> None:
    rows = [{"inputs": x, "labels": y} for x, y in DataLoader(_data(32), batch_size=16)]
    engine = Engine(_model(), rows, rows, EngineConfig(epochs=2))
    report = engine.train_epoch()
    assert report.train is not None and 0.0 <= report.val_accuracy <= 1.0


def test_a_run_on_a_dataloader_resumes_exactly() -> None:
    straight = _engine(SGD, COSINE)
    _grow(straight)
    for _ in range(2):
        straight.train_epoch()

    first = _engine(SGD, COSINE)
    _grow(first)
    saved = copy.deepcopy(first.state_dict())
    rng = torch.get_rng_state()
    resumed = _engine(SGD, COSINE, loader_seed=99)  # a fresh loader: its generator state comes back
    resumed.load_state_dict(saved)
    torch.set_rng_state(rng)
    for _ in range(2):
        resumed.train_epoch()
    assert resumed.history == straight.history
    for k, v in straight.model.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize(
    ("batches", "error", "fragment"),
    [
        ([torch.randn(4, 1, 8, 8)], BatchError, "expected each batch to be"),
        ([(torch.randn(4, 1, 8, 8), torch.zeros(4).long(), 1)], BatchError, "tuple of length 3"),
        ([{"pixels": torch.randn(4, 1, 8, 8)}], BatchError, "got keys \\['pixels'\\]"),
        ([(torch.randn(4, 3, 8, 8), torch.zeros(4).long())], ShapeError, r"expects input \(B, 1, H, W\)"),
    ],
)
def test_bad_batches_say_what_was_expected(batches, error, fragment) -> None:
    engine = Engine(_model(), batches, batches, EngineConfig(epochs=1))
    with pytest.raises(error, match=fragment):
        engine.train_epoch()


def test_a_loss_that_is_not_a_scalar_is_refused() -> None:
    data = list(DataLoader(_data(16), batch_size=16))
    engine = Engine(
        _model(),
        data,
        data,
        EngineConfig(epochs=1),
        loss_fn=lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none"),
    )
    with pytest.raises(BatchError, match=r"scalar tensor \(0-dim\); loss_fn returned \(16,\)"):
        engine.train_epoch()


def test_an_optimizer_over_other_parameters_is_refused() -> None:
    data = list(DataLoader(_data(16), batch_size=16))
    stranger = torch.optim.SGD(torch.nn.Linear(3, 3).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="does not hold"):
        Engine(_model(), data, data, EngineConfig(epochs=1), optimizer=stranger)

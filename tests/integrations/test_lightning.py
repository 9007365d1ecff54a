"""MorphogenesisCallback: a real lightning.Trainer on CPU grows, logs, checkpoints and resumes."""

from __future__ import annotations

import importlib
import sys
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

L = pytest.importorskip(
    "lightning", reason="the Lightning callback needs lightning: pip install 'esper[lightning]'"
)
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from esper.integrations.lightning import MorphogenesisCallback  # noqa: E402

EPOCHS = 8
SPLIT = 3  # the interrupted run stops here, with the seed in BLENDING


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer1(self.stem(x)).mean(dim=(2, 3)))


class Lit(L.LightningModule):
    def __init__(self, optimizers: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        gates = esper.QualityGates(
            min_training_epochs=1, min_holding_epochs=0, min_fossilize_contribution=-1.0
        )
        self.net = esper.inject_slots(Net(), ["layer1"], example_input=torch.zeros(2, 1, 8, 8), gates=gates)
        self.optimizers_wanted = optimizers

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer | list[torch.optim.Optimizer]:
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)  # momentum: state to restore
        if self.optimizers_wanted == 1:
            return opt
        return [opt, torch.optim.SGD(self.net.host.head.parameters(), lr=0.01)]


class Walk:
    """Germinate in ``layer1`` at once, advance whenever a gate passes, fossilize; a slow blend."""

    name = "walk"

    def decide(self, obs: Observation) -> Action:
        slot = obs.slot("layer1")
        if slot.stage == SeedStage.DORMANT:
            return Action(LifecycleOp.GERMINATE, slot="layer1", blueprint="conv_light", tempo_epochs=3)
        if slot.stage == SeedStage.HOLDING and slot.gate_ready:
            return Action(LifecycleOp.FOSSILIZE, slot="layer1")
        if slot.gate_ready:
            return Action(LifecycleOp.ADVANCE, slot="layer1")
        return WAIT

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 4, 4] > 0).long()
    return DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16), DataLoader(
        TensorDataset(x[64:], y[64:]), batch_size=32
    )


def _trainer(root: Path, epochs: int, callback: MorphogenesisCallback, **kwargs: object) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **{"logger": False, **kwargs},
    )


def _fit(root: Path, epochs: int, ckpt_path: str | None = None, **kwargs: object) -> tuple[Lit, L.Trainer]:
    module, callback = Lit(), MorphogenesisCallback(Walk(), epochs=EPOCHS)
    trainer = _trainer(root, epochs, callback, **kwargs)
    train, val = _loaders()
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return module, trainer


def _callback(trainer: L.Trainer) -> MorphogenesisCallback:
    return next(c for c in trainer.callbacks if isinstance(c, MorphogenesisCallback))


def test_the_callback_grows_a_seed_and_logs_the_lifecycle(tmp_path: Path) -> None:
    logger = CSVLogger(str(tmp_path), name="csv")
    module, trainer = _fit(tmp_path, EPOCHS, enable_checkpointing=False, logger=logger)
    slot = module.net.slot("layer1")
    assert slot.stage == SeedStage.FOSSILIZED
    metrics = trainer.callback_metrics
    assert metrics["esper/seeds_germinated"] == 1 and metrics["esper/seeds_fossilized"] == 1
    assert metrics["esper/seed/layer1/alpha"] == 1.0
    assert metrics["esper/seed/layer1/stage"] == int(SeedStage.FOSSILIZED)
    header = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"esper/seeds_germinated", "esper/seed/layer1/alpha", "esper/seed/layer1/contribution"} <= set(
        header
    )
    groups = trainer.optimizers[0].param_groups
    assert [g.get("esper_slot") for g in groups] == [None, "layer1"]
    seed = {id(p) for p in slot.seed_parameters()}
    assert seed == {id(p) for p in groups[1]["params"]} and not seed & {id(p) for p in groups[0]["params"]}


def test_resume_from_a_checkpoint_with_a_blending_seed_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    whole, whole_trainer = _fit(tmp_path / "whole", EPOCHS, enable_checkpointing=False)
    first, _ = _fit(tmp_path / "parts", SPLIT)
    assert first.net.slot("layer1").stage == SeedStage.BLENDING
    checkpoint = next((tmp_path / "parts").rglob("*.ckpt"))
    resumed, resumed_trainer = _fit(tmp_path / "resumed", EPOCHS, ckpt_path=str(checkpoint))
    assert resumed.net.slot("layer1").stage == whole.net.slot("layer1").stage == SeedStage.FOSSILIZED
    engines = [_callback(t).grower.engine for t in (whole_trainer, resumed_trainer)]  # type: ignore[union-attr]
    assert (
        engines[0].counters
        == engines[1].counters
        == {"seeds_germinated": 1, "seeds_fossilized": 1, "seeds_pruned": 0}
    )
    val = [[(h["val_loss"], h["val_accuracy"]) for h in e.history] for e in engines]
    assert val[0] == val[1] and len(val[1]) == engines[1].epoch == EPOCHS
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_several_optimizers_are_refused_with_what_is_supported(tmp_path: Path) -> None:
    module, callback = Lit(optimizers=2), MorphogenesisCallback(Walk())
    module.automatic_optimization = False
    trainer = _trainer(tmp_path, 1, callback, enable_checkpointing=False)
    with pytest.raises(ConfigError, match="exactly one optimizer; configure_optimizers gave 2"):
        trainer.fit(module, *_loaders())


def test_a_module_without_slots_is_refused(tmp_path: Path) -> None:
    class Plain(Lit):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()  # type: ignore[assignment]

    trainer = _trainer(tmp_path, 1, MorphogenesisCallback(Walk()), enable_checkpointing=False)
    with pytest.raises(ConfigError, match="holds no MorphogeneticModel"):
        trainer.fit(Plain(), *_loaders())


def test_without_lightning_the_import_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.callbacks"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    monkeypatch.delitem(sys.modules, "esper.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'esper\[lightning\]'"):
        importlib.import_module("esper.integrations.lightning")


def test_without_validation_data_the_callback_says_what_it_needs(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, 1, MorphogenesisCallback(Walk()), enable_checkpointing=False)
    with pytest.raises(ConfigError, match=r"pass val_dataloaders to Trainer\.fit"):
        trainer.fit(Lit(), _loaders()[0])

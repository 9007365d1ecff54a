"""Grow seeds inside a LightningModule with ``MorphogenesisCallback`` (needs ``esper[lightning]``).

The module holds the ResNet of ``resnet_digits.py`` with slots injected after ``layer2`` and
``layer3``; Lightning trains it, and the callback grows seeds, logs the lifecycle (CSV logs in
``--out``) and keeps its state in Lightning's checkpoints, so a run resumes with
``--resume path/to/last.ckpt``.

    python examples/lightning_digits.py --epochs 20
"""

from __future__ import annotations

import argparse

import lightning as L  # noqa: N812
import torch
import torch.nn.functional as F  # noqa: N812
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from resnet_digits import ResNet, make_data
from torch import Tensor

import esper
from esper.integrations.lightning import MorphogenesisCallback


class LitResNet(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        gates = esper.QualityGates(min_training_epochs=2, min_holding_epochs=1)
        example = torch.zeros(2, 1, 8, 8)
        self.net = esper.inject_slots(ResNet(), ["layer2", "layer3"], example_input=example, gates=gates)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="lightning_runs", help="logs and checkpoints go here")
    parser.add_argument("--resume", default=None, metavar="CKPT", help="a checkpoint to continue from")
    args = parser.parse_args()

    torch.manual_seed(0)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[
            MorphogenesisCallback("heuristic"),
            ModelCheckpoint(dirpath=f"{args.out}/ckpt", save_last=True),
        ],
        logger=CSVLogger(args.out, name="digits"),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = LitResNet()
    trainer.fit(model, *make_data(), ckpt_path=args.resume)
    stages = {s.slot_id: s.stage.name for s in model.net.slots()}
    print(f"val_acc {float(trainer.callback_metrics['val_acc']):.3f}  slots {stages}  logs {trainer.log_dir}")


if __name__ == "__main__":
    main()

"""Grow seeds inside a torchvision-style ResNet, trained in your own loop with ``esper.Grower``.

The ResNet below is an ordinary model (BasicBlocks, ``layer1..layer3``, ``fc``), written here
so the example needs no torchvision; Esper knows nothing about it. Slots go after ``layer2``
and ``layer3`` by name, and the heuristic controller grows seeds there while it trains on
scikit-learn's digits (embedded, no download).

Run it:                 python examples/resnet_digits.py --epochs 20
Or through the CLI:     esper train heuristic --model examples/resnet_digits.py:make_model \\
                            --data examples/resnet_digits.py:make_data --target-modules layer2,layer3
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import esper
from esper.data import get_task


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs and a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """A small torchvision-style ResNet: stem, three stages of BasicBlocks, pool, ``fc``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2))
        self.layer3 = nn.Sequential(BasicBlock(2 * width, 4 * width, stride=2))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_model() -> nn.Module:
    """The CLI's ``--model`` factory: a plain ResNet for 1x8x8 digits."""
    return ResNet()


def make_data(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """The CLI's ``--data`` factory: digits as ``(train, val)`` DataLoaders of (B, 1, 8, 8) images."""
    task = get_task("digits")
    generator = torch.Generator().manual_seed(0)  # its state goes into checkpoints: exact resume
    train = DataLoader(
        TensorDataset(task.train.x, task.train.y), batch_size=batch_size, shuffle=True, generator=generator
    )
    return train, DataLoader(TensorDataset(task.val.x, task.val.y), batch_size=256)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--run-dir", default=None, help="where events.jsonl goes (esper report works on it)")
    args = parser.parse_args()

    torch.manual_seed(0)
    train, val = make_data()
    x0, _ = next(iter(val))
    gates = esper.QualityGates(min_training_epochs=2, min_holding_epochs=1)
    model = esper.inject_slots(ResNet(), ["layer2", "layer3"], example_input=x0[:2], gates=gates)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    with esper.Grower(model, opt, epochs=args.epochs, val_data=val, run_dir=args.run_dir) as grower:
        for epoch in range(args.epochs):
            model.train()
            total = 0.0
            for x, y in train:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                total += loss.item() * len(y)
            report = grower.step(train_loss=total / len(train.dataset))
            stages = {s.slot_id: s.stage.name for s in model.slots()}
            print(f"epoch {epoch:3d}  val acc {report.val_accuracy:.3f}  {stages}")
    print(f"seeds: {grower.engine.counters}")


if __name__ == "__main__":
    main()

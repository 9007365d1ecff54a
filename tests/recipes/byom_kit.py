"""A user's model and data in a ``.py`` file, as ``--model FILE:make_model --data FILE:make_data``."""

from __future__ import annotations

from pathlib import Path

USER_CODE = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def make_model():
    return Net()


def _xy(channels=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, channels, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 4, 4] > 0).long()
    return x, y


def make_data():
    x, y = _xy()
    shuffle = torch.Generator().manual_seed(1)
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True, generator=shuffle)
    return train, DataLoader(TensorDataset(x[64:], y[64:]), batch_size=32)


def three_channel_data():
    x, y = _xy(channels=3)
    return DataLoader(TensorDataset(x, y), batch_size=16), DataLoader(TensorDataset(x, y), batch_size=16)


def not_a_model():
    return "a string"


def one_loader():
    return make_data()[0]
"""


def write_user_code(folder: Path) -> Path:
    """``folder/user_net.py`` holding ``Net``, ``make_model``, ``make_data`` and bad factories."""
    path = folder / "user_net.py"
    path.write_text(USER_CODE, encoding="utf-8")
    return path

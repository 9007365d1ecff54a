"""CNN seeds: residual modules over ``(B, C, H, W)`` features that start as the identity.

Every seed zero-initialises its last affine layer, so germinating never changes the host's
function, and keeps the input's memory format (channels_last in, channels_last out).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper.kasmina.blueprints.registry import BlueprintRegistry

__all__: list[str] = []


def _groups(channels: int) -> int:
    """Largest group count <= 8 that divides ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _zero(layer: nn.Conv2d | nn.Linear | nn.GroupNorm) -> None:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class Residual(nn.Module):
    """``x + body(x)``; the body's last affine layer is zero-initialised by the factory."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Identity(nn.Module):
    """A seed with no parameters: the identity (measures pure slot overhead)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * (1 + tanh(fc2(relu(fc1(pool(x))))))``, fc2 zero-initialised."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 4, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        _zero(self.fc2)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))  # (B, C, 1, 1)
        return x * (1.0 + torch.tanh(scale))


def _se_hidden(c: int) -> int:
    return max(c // 4, 4)


@BlueprintRegistry.register(
    "noop", "cnn", param_estimate=lambda c: 0, description="identity, no parameters"
)
def noop(dim: int) -> nn.Module:
    return Identity()


@BlueprintRegistry.register(
    "norm", "cnn", param_estimate=lambda c: 2 * c, description="x + GroupNorm(x), zero affine"
)
def norm(dim: int) -> nn.Module:
    gn = nn.GroupNorm(_groups(dim), dim)
    _zero(gn)
    return Residual(gn)


@BlueprintRegistry.register(
    "attention",
    "cnn",
    param_estimate=lambda c: 2 * c * _se_hidden(c) + _se_hidden(c) + c,
    description="squeeze-excite channel attention",
)
def attention(dim: int) -> nn.Module:
    return SqueezeExcite(dim)


@BlueprintRegistry.register(
    "depthwise",
    "cnn",
    param_estimate=lambda c: 10 * c + c * c + c,
    description="3x3 depthwise then 1x1 pointwise (zero-init)",
)
def depthwise(dim: int) -> nn.Module:
    pw = nn.Conv2d(dim, dim, 1)
    _zero(pw)
    return Residual(nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.ReLU(), pw))


def _bottleneck_params(c: int) -> int:
    m = max(c // 4, 1)
    return (c * m + m) + (9 * m * m + m) + (m * c + c)


@BlueprintRegistry.register(
    "bottleneck",
    "cnn",
    param_estimate=_bottleneck_params,
    description="1x1 reduce 4x, 3x3, 1x1 expand (zero-init)",
)
def bottleneck(dim: int) -> nn.Module:
    mid = max(dim // 4, 1)
    out = nn.Conv2d(mid, dim, 1)
    _zero(out)
    return Residual(
        nn.Sequential(
            nn.Conv2d(dim, mid, 1), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(), out
        )
    )


@BlueprintRegistry.register(
    "conv_small",
    "cnn",
    param_estimate=lambda c: c * c + c,
    description="one 1x1 conv (zero-init)",
)
def conv_small(dim: int) -> nn.Module:
    conv = nn.Conv2d(dim, dim, 1)
    _zero(conv)
    return Residual(conv)


def _conv_light_params(c: int) -> int:
    m = max(c // 2, 1)
    return (9 * c * m + m) + (m * c + c)


@BlueprintRegistry.register(
    "conv_light",
    "cnn",
    param_estimate=_conv_light_params,
    description="3x3 conv to C/2, 1x1 back to C (zero-init)",
)
def conv_light(dim: int) -> nn.Module:
    mid = max(dim // 2, 1)
    out = nn.Conv2d(mid, dim, 1)
    _zero(out)
    return Residual(nn.Sequential(nn.Conv2d(dim, mid, 3, padding=1), nn.ReLU(), out))


@BlueprintRegistry.register(
    "conv_heavy",
    "cnn",
    param_estimate=lambda c: 2 * (9 * c * c + c) + 2 * c,
    description="3x3 conv, GroupNorm, ReLU, 3x3 conv (zero-init)",
)
def conv_heavy(dim: int) -> nn.Module:
    out = nn.Conv2d(dim, dim, 3, padding=1)
    _zero(out)
    return Residual(
        nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(_groups(dim), dim), nn.ReLU(), out
        )
    )

"""Transformer seeds: residual modules over ``(B, T, C)`` features that start as the identity.

Every seed zero-initialises its output projection; attention seeds are causal, so a seed never
lets a position see the future.
"""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import Tensor, nn

from esper.kasmina.blueprints.cnn import Identity, Residual
from esper.kasmina.blueprints.registry import BlueprintRegistry

__all__: list[str] = []


def _zero_linear(layer: nn.Linear | nn.LayerNorm) -> None:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a zero-initialised output projection."""

    def __init__(self, dim: int, n_head: int) -> None:
        super().__init__()
        if dim % n_head != 0:
            raise ValueError(f"attention seed needs dim divisible by n_head, got {dim} and {n_head}")
        self.n_head = n_head
        self.ln = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        _zero_linear(self.proj)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln(x)).split(c, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(y.transpose(1, 2).reshape(b, t, c))


def _lora(dim: int, rank: int) -> nn.Module:
    down, up = nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False)
    nn.init.zeros_(up.weight)
    return Residual(nn.Sequential(down, up))


def _mlp(dim: int, hidden: int) -> nn.Module:
    out = nn.Linear(hidden, dim)
    _zero_linear(out)
    return Residual(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), out))


def _n_head(dim: int) -> int:
    return next(h for h in (4, 2, 1) if dim % h == 0)


@BlueprintRegistry.register(
    "noop", "transformer", param_estimate=lambda c: 0, description="identity, no parameters"
)
def noop(dim: int) -> nn.Module:
    return Identity()


@BlueprintRegistry.register(
    "norm", "transformer", param_estimate=lambda c: 2 * c, description="x + LayerNorm(x), zero affine"
)
def norm(dim: int) -> nn.Module:
    ln = nn.LayerNorm(dim)
    _zero_linear(ln)
    return Residual(ln)


@BlueprintRegistry.register(
    "lora", "transformer", param_estimate=lambda c: 2 * 8 * c, description="rank-8 low-rank adapter"
)
def lora(dim: int, rank: int = 8) -> nn.Module:
    return _lora(dim, rank)


@BlueprintRegistry.register(
    "lora_large",
    "transformer",
    param_estimate=lambda c: 2 * 32 * c,
    description="rank-32 low-rank adapter",
)
def lora_large(dim: int, rank: int = 32) -> nn.Module:
    return _lora(dim, rank)


@BlueprintRegistry.register(
    "attention",
    "transformer",
    param_estimate=lambda c: 2 * c + (3 * c * c + 3 * c) + (c * c + c),
    description="causal self-attention block (pre-LN)",
    needs_sequence=True,
)
def attention(dim: int, n_head: int | None = None) -> nn.Module:
    return CausalSelfAttention(dim, n_head or _n_head(dim))


@BlueprintRegistry.register(
    "mlp_small",
    "transformer",
    param_estimate=lambda c: 2 * c + 2 * (c * c + c),
    description="pre-LN MLP, expansion 1",
)
def mlp_small(dim: int) -> nn.Module:
    return _mlp(dim, dim)


@BlueprintRegistry.register(
    "mlp",
    "transformer",
    param_estimate=lambda c: 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c),
    description="pre-LN MLP, expansion 4",
)
def mlp(dim: int) -> nn.Module:
    return _mlp(dim, 4 * dim)

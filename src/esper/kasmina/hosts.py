"""Host networks with injection points: a CNN for images and a causal transformer for text.

A host is ``embed -> blocks -> finish``; each block ends at an injection point whose slot id
(``r0c0``, ``r0c1``, ...) and width are in ``segment_channels``. ``MorphogeneticModel`` routes
the features through a slot after each block; the host's own ``forward`` is the same path
without slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import Tensor, nn

from esper.errors import ShapeError

__all__ = ["CNNHost", "HostBase", "InjectionSpec", "TransformerHost"]


@dataclass(frozen=True, slots=True)
class InjectionSpec:
    """One injection point: slot id, feature width, block index, topology."""

    slot_id: str
    channels: int
    index: int
    topology: str


class HostBase(nn.Module):
    """What every host provides to ``MorphogeneticModel``."""

    topology: str = ""
    blocks: nn.ModuleList

    def embed(self, x: Tensor) -> Tensor:
        """Input -> features before the first block."""
        raise NotImplementedError

    def finish(self, h: Tensor) -> Tensor:
        """Features after the last block -> outputs (logits)."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """Raise ``ShapeError`` giving the expected shape when ``x`` does not fit."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments, primitives only (enough to rebuild the host)."""
        raise NotImplementedError

    @property
    def segment_channels(self) -> dict[str, int]:
        """Slot id -> feature width at that injection point, in execution order."""
        return {spec.slot_id: spec.channels for spec in self.injection_specs()}

    def injection_specs(self) -> list[InjectionSpec]:
        """Every injection point, in execution order."""
        return [
            InjectionSpec(f"r0c{i}", self._block_width(i), i, self.topology)
            for i in range(len(self.blocks))
        ]

    def _block_width(self, index: int) -> int:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.finish(h)


class ConvBlock(nn.Sequential):
    """3x3 conv, BatchNorm, ReLU, optional 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, pool: bool) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)
        self.out_channels = c_out


class CNNHost(HostBase):
    """A plain CNN: ``n_blocks`` conv blocks (channels double per block), global pool, linear.

    Args:
        num_classes: output classes.
        n_blocks: conv blocks, one injection point after each.
        base_channels: channels of the first block.
        in_channels: input image channels.
        pool_layers: the first ``pool_layers`` blocks end with a 2x2 max-pool (default: all).
    """

    topology = "cnn"

    def __init__(
        self,
        num_classes: int = 10,
        n_blocks: int = 3,
        base_channels: int = 32,
        in_channels: int = 3,
        pool_layers: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("n_blocks", n_blocks),
            ("base_channels", base_channels),
            ("in_channels", in_channels),
        ):
            _check_positive_int(name, value)
        pools = n_blocks if pool_layers is None else pool_layers
        if isinstance(pools, bool) or not isinstance(pools, int) or not 0 <= pools <= n_blocks:
            raise ValueError(f"pool_layers must be an int in [0, {n_blocks}], got {pool_layers!r}")
        self._config = {
            "num_classes": num_classes,
            "n_blocks": n_blocks,
            "base_channels": base_channels,
            "in_channels": in_channels,
            "pool_layers": pool_layers,
        }
        self.in_channels = in_channels
        widths = [base_channels * 2**i for i in range(n_blocks)]
        ins = [in_channels, *widths[:-1]]
        self.blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, i < pools) for i, (c_in, c_out) in enumerate(zip(ins, widths, strict=True))
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return x

    def finish(self, h: Tensor) -> Tensor:
        return self.head(h.mean(dim=(2, 3)))  # (B, C, H, W) -> (B, C) -> (B, classes)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"CNNHost expects input (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def _block_width(self, index: int) -> int:
        block = self.blocks[index]
        assert isinstance(block, ConvBlock)
        return block.out_channels


class TransformerBlock(nn.Module):
    """Pre-LN causal self-attention + MLP (nanoGPT style)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class TransformerHost(HostBase):
    """A small causal transformer language model: tokens ``(B, T)`` -> logits ``(B, T, V)``.

    Args:
        vocab_size: number of tokens.
        n_embd: embedding width (the width at every injection point).
        n_head: attention heads (must divide ``n_embd``).
        n_layer: blocks, one injection point after each.
        block_size: maximum sequence length.
        dropout: dropout probability.
    """

    topology = "transformer"

    def __init__(
        self,
        vocab_size: int,
        n_embd: int,
        n_head: int,
        n_layer: int,
        block_size: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("n_embd", n_embd),
            ("n_head", n_head),
            ("n_layer", n_layer),
            ("block_size", block_size),
        ):
            _check_positive_int(name, value)
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self._config = {
            "vocab_size": vocab_size,
            "n_embd": n_embd,
            "n_head": n_head,
            "n_layer": n_layer,
            "block_size": block_size,
            "dropout": dropout,
        }
        self.vocab_size, self.n_embd, self.block_size = vocab_size, n_embd, block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying (nanoGPT)
        self.apply(_init_transformer_weights)

    def embed(self, x: Tensor) -> Tensor:
        pos = torch.arange(x.shape[1], device=x.device)
        return self.drop(self.tok_emb(x) + self.pos_emb(pos))  # (B, T, C)

    def finish(self, h: Tensor) -> Tensor:
        return self.lm_head(self.ln_f(h))  # (B, T, V)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] > self.block_size or x.is_floating_point():
            raise ShapeError(
                f"TransformerHost expects integer tokens (B, T) with T <= {self.block_size}, "
                f"got shape {tuple(x.shape)} and dtype {x.dtype}"
            )

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def _block_width(self, index: int) -> int:
        return self.n_embd


def _init_transformer_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


HOST_CLASSES: dict[str, type[HostBase]] = {"CNNHost": CNNHost, "TransformerHost": TransformerHost}


def build_host(name: str, config: dict[str, Any]) -> HostBase:
    """Rebuild a host from its class name and :meth:`HostBase.config`."""
    try:
        cls = HOST_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown host {name!r}; known: {sorted(HOST_CLASSES)}") from None
    return cls(**config)

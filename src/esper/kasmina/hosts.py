"""Host networks with injection points: a CNN for images and a causal transformer for text.

A host is ``embed -> blocks -> finish``; each block ends at an injection point whose slot id
(``r0c0``, ``r0c1``, ...) and width are in ``segment_channels``. ``MorphogeneticModel`` routes
the features through a slot after each block; the host's own ``forward`` is the same path
without slots. A host that supports width growth names, per slot, the layers that grow
(``width_site``) and routes the new units while a width seed is live (``forward_widened``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import Tensor, nn

from esper.errors import ShapeError, UnknownSlotError, WidthGrowthError
from esper.kasmina.width import WidthSite

if TYPE_CHECKING:  # slot.py does not import hosts; this is for the annotations only
    from esper.kasmina.slot import SeedSlot

Route = Sequence["SeedSlot | None"]

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

    def width_site(self, slot_id: str) -> WidthSite:
        """The layers that grow when ``slot_id`` widens; a host without width sites refuses."""
        raise WidthGrowthError(
            f"slot {slot_id!r}: {type(self).__name__} names no width site (producer -> norm -> "
            f"reader) for width growth; expected a host implementing width_site()"
        )

    def forward_widened(self, h: Tensor, route: Route) -> Tensor:
        """Embedded features -> outputs while a width seed is live (``route``: slot per block)."""
        raise NotImplementedError

    def _slot_index(self, slot_id: str) -> int:
        for spec in self.injection_specs():
            if spec.slot_id == slot_id:
                return spec.index
        known = [s.slot_id for s in self.injection_specs()]
        raise UnknownSlotError(f"unknown slot {slot_id!r}; this host has slots {known}")

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

    @property
    def out_channels(self) -> int:
        conv = self[0]
        assert isinstance(conv, nn.Conv2d)
        return conv.out_channels

    def forward_read(self, h: Tensor, slot: SeedSlot, units: Tensor) -> Tensor:
        """The block with a width seed's new units read into its conv's output (before BN)."""
        z = slot.blend_width(self[0](h), units)
        for layer in list(self)[1:]:
            z = layer(z)
        return z


class CNNHost(HostBase):
    """A plain CNN: ``n_blocks`` conv blocks (channels double per block), global pool, linear.

    Args:
        num_classes: output classes.
        n_blocks: conv blocks, one injection point after each.
        base_channels: channels of the first block.
        in_channels: input image channels.
        pool_layers: the first ``pool_layers`` blocks end with a 2x2 max-pool (default: all).
        widths: each block's output channels (default: ``base_channels * 2**i``); width growth
            records its result here.
    """

    topology = "cnn"

    def __init__(
        self,
        num_classes: int = 10,
        n_blocks: int = 3,
        base_channels: int = 32,
        in_channels: int = 3,
        pool_layers: int | None = None,
        *,
        widths: list[int] | None = None,
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
        self._default_widths = [base_channels * 2**i for i in range(n_blocks)]
        if widths is None:
            widths = self._default_widths
        elif len(widths) != n_blocks or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"widths must be {n_blocks} ints >= 1 (one per block), got {widths!r}")
        widths = list(widths)
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
        config: dict[str, Any] = dict(self._config)
        widths = [self._block_width(i) for i in range(len(self.blocks))]
        if widths != self._default_widths:
            config["widths"] = widths
        return config

    def _block_width(self, index: int) -> int:
        return self._conv_block(index).out_channels

    def _conv_block(self, index: int) -> ConvBlock:
        block = self.blocks[index]
        assert isinstance(block, ConvBlock)
        return block

    def width_site(self, slot_id: str) -> WidthSite:
        """Block ``i``'s conv and BN grow; block ``i+1``'s conv (or the head) reads the new channels."""
        index = self._slot_index(slot_id)
        conv, norm, *post = self._conv_block(index)
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        ops: list[nn.Module] = [copy.deepcopy(m) for m in post]  # ReLU and the block's max-pool
        reader: nn.Module
        if index + 1 < len(self.blocks):
            reader = self._conv_block(index + 1)[0]
        else:
            reader, ops = self.head, [*ops, _GlobalMean()]
        if not isinstance(reader, nn.Conv2d | nn.Linear):
            raise WidthGrowthError(
                f"slot {slot_id!r}: widening block {index} ({conv.out_channels} channels) needs a "
                f"Conv2d or Linear reading them, found {type(reader).__name__}"
            )
        return WidthSite(slot_id, conv, norm, nn.Sequential(*ops), reader)

    def forward_widened(self, h: Tensor, route: Route) -> Tensor:
        """The forward with live width seeds: block ``i``'s new channels feed block ``i+1``'s conv."""
        grown: tuple[SeedSlot, Tensor] | None = None  # new channels waiting for their reader
        for block, slot in zip(self.blocks, route, strict=True):
            assert isinstance(block, ConvBlock)
            x = h
            h = block(h) if grown is None else block.forward_read(h, *grown)
            grown = None
            if slot is not None:
                if slot.widening:
                    grown = (slot, slot.grow_width(x))  # (B, k, H', W'), from the block's input
                elif slot.active:
                    h = slot(h)
        logits = self.finish(h)
        return logits if grown is None else grown[0].blend_width(logits, grown[1])


class _GlobalMean(nn.Module):
    """``(B, C, H, W) -> (B, C)``: the CNN head's pooling, as a per-channel op for width seeds."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class TransformerBlock(nn.Module):
    """Pre-LN causal self-attention + MLP (nanoGPT style)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, mlp_hidden: int | None = None) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        hidden = 4 * n_embd if mlp_hidden is None else mlp_hidden
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, hidden), nn.GELU(), nn.Linear(hidden, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self._attend(x)
        return x + self.mlp(self.ln2(x))

    def forward_widened(self, x: Tensor, slot: SeedSlot) -> Tensor:
        """The block with a width seed's new MLP hidden units added to fc2's output."""
        x = self._attend(x)
        u = self.ln2(x)
        fc1, act, fc2, drop = self.mlp
        z = fc2(act(fc1(u)))  # (B, T, C)
        return x + drop(slot.blend_width(z, slot.grow_width(u)))

    @property
    def mlp_hidden(self) -> int:
        fc1 = self.mlp[0]
        assert isinstance(fc1, nn.Linear)
        return fc1.out_features

    def _attend(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return x + self.proj(y.transpose(1, 2).reshape(b, t, c))


class TransformerHost(HostBase):
    """A small causal transformer language model: tokens ``(B, T)`` -> logits ``(B, T, V)``.

    Args:
        vocab_size: number of tokens.
        n_embd: embedding width (the width at every injection point).
        n_head: attention heads (must divide ``n_embd``).
        n_layer: blocks, one injection point after each.
        block_size: maximum sequence length.
        dropout: dropout probability.
        mlp_widths: each block's MLP hidden units (default: ``4 * n_embd``); width growth
            records its result here.
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
        *,
        mlp_widths: list[int] | None = None,
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
        if mlp_widths is None:
            mlp_widths = [4 * n_embd] * n_layer
        elif len(mlp_widths) != n_layer or not all(isinstance(w, int) and w >= 1 for w in mlp_widths):
            raise ValueError(f"mlp_widths must be {n_layer} ints >= 1 (one per block), got {mlp_widths!r}")
        self.blocks = nn.ModuleList(TransformerBlock(n_embd, n_head, dropout, w) for w in mlp_widths)
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
        config: dict[str, Any] = dict(self._config)
        widths = [self._block(i).mlp_hidden for i in range(len(self.blocks))]
        if widths != [4 * self.n_embd] * len(widths):
            config["mlp_widths"] = widths
        return config

    def _block_width(self, index: int) -> int:
        return self.n_embd

    def _block(self, index: int) -> TransformerBlock:
        block = self.blocks[index]
        assert isinstance(block, TransformerBlock)
        return block

    def width_site(self, slot_id: str) -> WidthSite:
        """Block ``i``'s MLP: fc1 gains hidden units, GELU, fc2 reads them."""
        fc1, act, fc2, _ = self._block(self._slot_index(slot_id)).mlp
        assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
        return WidthSite(slot_id, fc1, None, copy.deepcopy(act), fc2)

    def forward_widened(self, h: Tensor, route: Route) -> Tensor:
        """The forward with live width seeds: each widens its own block's MLP."""
        for block, slot in zip(self.blocks, route, strict=True):
            assert isinstance(block, TransformerBlock)
            if slot is not None and slot.widening:
                h = block.forward_widened(h, slot)
            else:
                h = block(h)
                if slot is not None and slot.active:
                    h = slot(h)
        return self.finish(h)


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

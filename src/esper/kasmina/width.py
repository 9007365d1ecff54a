"""Width growth: ``k`` new units of a host layer and their outgoing weights, function-preserving at birth.

A width site is a chain of explicit host modules: a *producer* (``Conv2d`` or ``Linear``) whose
output units grow, an optional per-unit *norm* (``BatchNorm2d``), parameterless per-unit ops
(ReLU, max-pool, GELU, a global mean before a head) and the *reader* (``Conv2d`` or ``Linear``)
that consumes those units. A :class:`WidthSeed` holds the new parameters until it fossilizes:
``k`` producer rows, the norm's affine and running statistics for them, and the reader's ``k``
new input columns, zero-initialised so that the host's function is unchanged at birth. The new
units' contribution ``read(units)`` is added to the reader's pre-activation output (straight
through in TRAINING, times alpha in BLENDING/HOLDING). Fossilizing concatenates the new
parameters into the host's layers (:meth:`WidthSeed.merge_into`) and returns
:class:`ParamRemap` records so that optimizer state can follow (see
:func:`esper.kasmina.optim_remap.carry_optimizer_state`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from esper.errors import WidthGrowthError

__all__ = ["ParamRemap", "WidthSeed", "WidthSite"]

Layer = nn.Conv2d | nn.Linear


@dataclass(frozen=True, slots=True)
class WidthSite:
    """Where a slot's width grows: explicit host modules (see the module docstring).

    Attributes:
        slot_id: the slot that owns the growth (for messages).
        producer: the layer whose output units grow.
        norm: the per-unit norm after the producer, or None.
        post: parameterless per-unit ops between the norm and the reader (copied into the seed).
        reader: the layer that reads the producer's units.
    """

    slot_id: str
    producer: Layer
    norm: nn.BatchNorm2d | None
    post: nn.Module
    reader: Layer

    @property
    def width(self) -> int:
        """The producer's output units now."""
        return _units_out(self.producer)


@dataclass(frozen=True, slots=True)
class ParamRemap:
    """A parameter replaced by a larger one; ``new.narrow(dim, 0, old.shape[dim])`` holds ``old``.

    Attributes:
        name: where the parameter lives (for messages), e.g. ``"r0c1 producer.weight"``.
        old: the parameter that is gone.
        new: the parameter that replaces it.
        dim: the dimension that grew.
    """

    name: str
    old: nn.Parameter
    new: nn.Parameter
    dim: int


class WidthSeed(nn.Module):
    """The new units of one width site and their outgoing weights (zero at birth).

    Args:
        site: the host modules the units extend.
        units: how many units to add (``k``).
        max_width: refuse to grow the producer beyond this many units.

    Raises:
        WidthGrowthError: an unsupported layer, a reader that does not read the producer's
            units, or a width beyond ``max_width``.
    """

    norm: nn.BatchNorm2d | None

    def __init__(self, site: WidthSite, units: int, *, max_width: int | None = None) -> None:
        super().__init__()
        _check_site(site, units, max_width)
        self.units = units
        self.base_units = site.width
        """The producer's units before this growth."""
        self.grow = _layer_like(site.producer, in_units=_units_in(site.producer), out_units=units)
        self.norm = None
        if site.norm is not None:
            n, w = site.norm, site.producer.weight  # built where the host lives
            self.norm = nn.BatchNorm2d(
                units, n.eps, n.momentum, n.affine, n.track_running_stats, device=w.device, dtype=w.dtype
            )
        self.post = copy.deepcopy(site.post)
        self.read = _layer_like(site.reader, in_units=units, out_units=_units_out(site.reader), bias=False)
        nn.init.zeros_(self.read.weight)  # function-preserving: the host sees nothing at birth

    def grow_units(self, x: Tensor) -> Tensor:
        """The producer's input -> the new units after norm and per-unit ops."""
        z = self.grow(x)
        if self.norm is not None:
            z = self.norm(z)
        return self.post(z)

    def read_units(self, units: Tensor) -> Tensor:
        """The new units -> their term in the reader's pre-activation output."""
        return self.read(units)

    def fits(self, site: WidthSite) -> bool:
        """Whether this seed's shapes match ``site`` as the host is now."""
        return (
            _units_in(self.grow) == _units_in(site.producer)
            and _units_out(self.read) == _units_out(site.reader)
            and _units_in(site.reader) == site.width
        )

    # ----------------------------------------------------------------- structural changes
    def merge_into(self, site: WidthSite, alpha: float = 1.0) -> list[ParamRemap]:
        """Concatenate the new units into the host's layers; they become ordinary host units.

        The reader's new columns are ``alpha * read.weight``, so the merged host computes what
        the blend did at ``alpha`` (1.0 after a full ramp).
        """
        sid, k = site.slot_id, self.units
        remaps = [_cat(f"{sid} producer.weight", site.producer, "weight", self.grow.weight, 0)]
        if site.producer.bias is not None:
            assert self.grow.bias is not None
            remaps.append(_cat(f"{sid} producer.bias", site.producer, "bias", self.grow.bias, 0))
        _resize(site.producer, out_units=_units_out(site.producer) + k)
        if site.norm is not None:
            assert self.norm is not None
            remaps.extend(_merge_norm(sid, site.norm, self.norm))
        outgoing = self.read.weight if alpha == 1.0 else self.read.weight * alpha
        remaps.append(_cat(f"{sid} reader.weight", site.reader, "weight", outgoing, 1))
        _resize(site.reader, in_units=_units_in(site.reader) + k)
        return remaps

    def widen_input(self, extra: int) -> ParamRemap:
        """The producer's input grew by ``extra`` units: zero columns, so the function is kept."""
        new = _zeros_like_grown(self.grow.weight, 1, extra)
        remap = _cat(f"width seed grow.weight (+{extra} inputs)", self.grow, "weight", new, 1)
        _resize(self.grow, in_units=_units_in(self.grow) + extra)
        return remap

    def widen_output(self, extra: int) -> ParamRemap:
        """The reader's output grew by ``extra`` units: zero rows, so the function is kept."""
        new = _zeros_like_grown(self.read.weight, 0, extra)
        remap = _cat(f"width seed read.weight (+{extra} outputs)", self.read, "weight", new, 0)
        _resize(self.read, out_units=_units_out(self.read) + extra)
        return remap

    def extra_repr(self) -> str:
        return f"units={self.units}"


def site_params(site: WidthSite, units: int) -> int:
    """Parameters a width seed of ``units`` units at ``site`` holds (exact)."""
    p, r = site.producer, site.reader
    per_unit = p.weight[0].numel() + (1 if p.bias is not None else 0)
    if site.norm is not None and site.norm.affine:
        per_unit += 2
    per_unit += r.weight.shape[0] * math.prod(r.weight.shape[2:])
    return units * per_unit


# --------------------------------------------------------------------- helpers
def _check_site(site: WidthSite, units: int, max_width: int | None) -> None:
    where = f"slot {site.slot_id!r}"
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise WidthGrowthError(f"{where}: a width seed needs units as an int >= 1, got {units!r}")
    for role, layer in (("producer", site.producer), ("reader", site.reader)):
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            raise WidthGrowthError(
                f"{where}: the width {role} must be a Conv2d or Linear, got {type(layer).__name__}"
            )
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
            raise WidthGrowthError(
                f"{where}: the width {role} must be a plain Conv2d (groups=1, zero padding), got {layer}"
            )
    width = site.width
    if _units_in(site.reader) != width:
        raise WidthGrowthError(
            f"{where}: the reader {site.reader} does not read the producer's {width} units; "
            f"expected a Conv2d or Linear with {width} input units"
        )
    if site.norm is not None and site.norm.num_features != width:
        raise WidthGrowthError(f"{where}: the norm {site.norm} does not match the producer's {width} units")
    if any(True for _ in site.post.parameters()) or any(True for _ in site.post.buffers()):
        raise WidthGrowthError(f"{where}: the per-unit ops between norm and reader must hold no state")
    if max_width is not None and width + units > max_width:
        raise WidthGrowthError(
            f"{where}: widening {width} -> {width + units} units exceeds max_width={max_width}; "
            f"pick a narrower blueprint or raise max_width"
        )


def _units_in(layer: Layer) -> int:
    return layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features


def _units_out(layer: Layer) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _resize(layer: Layer, *, in_units: int | None = None, out_units: int | None = None) -> None:
    """Keep a layer's size attributes in step with its (replaced) weight."""
    conv = isinstance(layer, nn.Conv2d)
    if in_units is not None:
        setattr(layer, "in_channels" if conv else "in_features", in_units)
    if out_units is not None:
        setattr(layer, "out_channels" if conv else "out_features", out_units)


def _layer_like(layer: Layer, *, in_units: int, out_units: int, bias: bool | None = None) -> Layer:
    """A fresh layer of ``layer``'s kind and hyperparameters with other unit counts."""
    has_bias = layer.bias is not None if bias is None else bias
    w = layer.weight
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(
            in_units,
            out_units,
            layer.kernel_size,  # type: ignore[arg-type]
            stride=layer.stride,  # type: ignore[arg-type]
            padding=layer.padding,  # type: ignore[arg-type]
            dilation=layer.dilation,  # type: ignore[arg-type]
            bias=has_bias,
            device=w.device,
            dtype=w.dtype,
        )
    return nn.Linear(in_units, out_units, bias=has_bias, device=w.device, dtype=w.dtype)


def _zeros_like_grown(weight: Tensor, dim: int, extra: int) -> Tensor:
    shape = list(weight.shape)
    shape[dim] = extra
    return torch.zeros(shape, dtype=weight.dtype, device=weight.device)


def _cat(name: str, module: nn.Module, attr: str, extra: Tensor, dim: int) -> ParamRemap:
    """Replace ``module.<attr>`` by a new parameter ``cat([old, extra], dim)``."""
    old = getattr(module, attr)
    assert isinstance(old, nn.Parameter)
    new = nn.Parameter(torch.cat([old.detach(), extra.detach().to(old)], dim), old.requires_grad)
    setattr(module, attr, new)
    return ParamRemap(name, old, new, dim)


def _merge_norm(sid: str, host: nn.BatchNorm2d, new: nn.BatchNorm2d) -> list[ParamRemap]:
    """Concatenate BatchNorm affine parameters and running statistics (per-unit, so exact)."""
    remaps = []
    if host.affine:
        remaps.append(_cat(f"{sid} norm.weight", host, "weight", new.weight, 0))
        remaps.append(_cat(f"{sid} norm.bias", host, "bias", new.bias, 0))
    if host.running_mean is not None and host.running_var is not None:
        assert new.running_mean is not None and new.running_var is not None
        host.running_mean = torch.cat([host.running_mean, new.running_mean.to(host.running_mean)])
        host.running_var = torch.cat([host.running_var, new.running_var.to(host.running_var)])
    host.num_features += new.num_features
    return remaps

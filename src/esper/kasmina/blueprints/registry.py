"""The blueprint registry: one place that knows every seed module and what it costs.

Two families share it (and so the action space): residual seeds (``factory(dim)``: a module at
the slot's width that starts as the identity) and width seeds (:meth:`BlueprintRegistry.register_width`:
new units of the host layer before the slot, built from the host's width site).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import nn

from esper.errors import UnknownBlueprintError, WidthGrowthError, did_you_mean
from esper.kasmina.width import WidthSeed, WidthSite

__all__ = ["TOPOLOGIES", "BlueprintRegistry", "BlueprintSpec"]

TOPOLOGIES: tuple[str, ...] = ("cnn", "transformer")

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True, slots=True)
class BlueprintSpec:
    """A registered seed: its factory and an exact parameter-count formula.

    Attributes:
        name: blueprint name, unique per topology.
        topology: ``"cnn"`` or ``"transformer"``.
        factory: ``factory(dim, **kw) -> nn.Module`` mapping features of width ``dim`` to the
            same shape, starting as the identity.
        param_estimate: ``param_estimate(dim) -> int``, the parameter count at width ``dim``
            (exact for default keyword arguments; the registry tests check it). For a width
            blueprint it is exact at a 3x3-conv (cnn) or MLP (transformer) site whose input and
            reader output are ``dim`` wide; ``SeedSlot.param_estimate`` is exact at the slot.
        description: one line for humans.
        needs_sequence: the seed mixes positions along ``T`` of ``(B, T, C)`` (attention), so
            it means nothing on 2-D ``(B, C)`` features, which slots see as a sequence of one.
        width_units: for a width blueprint, ``width_units(dim) -> k``, the units it adds at a
            slot of width ``dim``; None for residual seeds.
    """

    name: str
    topology: str
    factory: Factory
    param_estimate: Callable[[int], int]
    description: str
    needs_sequence: bool = False
    width_units: Callable[[int], int] | None = None

    @property
    def is_width(self) -> bool:
        """Whether this blueprint grows the host's width (rather than adding a residual module)."""
        return self.width_units is not None

    def create(self, dim: int, **kwargs: Any) -> nn.Module:
        """Build the seed for features of width ``dim`` (residual blueprints only)."""
        _check_dim(self.name, dim)
        if self.width_units is not None:
            raise WidthGrowthError(
                f"blueprint {self.name!r} grows the host's width: it needs the host's layers, so "
                f"germinate it in a MorphogeneticModel slot (or use create_width with a WidthSite)"
            )
        return self.factory(dim, **kwargs)

    def create_width(self, site: WidthSite, dim: int, **kwargs: Any) -> WidthSeed:
        """Build the width seed for ``site`` at a slot of width ``dim`` (width blueprints only)."""
        _check_dim(self.name, dim)
        if self.width_units is None:
            raise ValueError(f"blueprint {self.name!r} is a residual seed, not a width blueprint")
        seed = self.factory(site, self.width_units(dim), **kwargs)
        assert isinstance(seed, WidthSeed)
        return seed


def _check_dim(name: str, dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"blueprint {name!r} needs dim as an int >= 1, got {dim!r}")


class BlueprintRegistry:
    """Class-level registry of blueprints keyed by ``(topology, name)``."""

    _specs: ClassVar[dict[tuple[str, str], BlueprintSpec]] = {}

    @classmethod
    def register(
        cls,
        name: str,
        topology: str,
        *,
        param_estimate: Callable[[int], int],
        description: str = "",
        needs_sequence: bool = False,
    ) -> Callable[[F], F]:
        """Decorator that registers ``factory(dim, **kw)``; a duplicate name is an error."""
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")

        def decorator(factory: F) -> F:
            cls._add(BlueprintSpec(name, topology, factory, param_estimate, description, needs_sequence))
            return factory

        return decorator

    @classmethod
    def register_width(
        cls,
        name: str,
        topology: str,
        *,
        units: Callable[[int], int],
        param_estimate: Callable[[int], int],
        description: str = "",
    ) -> None:
        """Register a width blueprint adding ``units(dim)`` units (a :class:`WidthSeed`)."""
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
        cls._add(BlueprintSpec(name, topology, WidthSeed, param_estimate, description, False, units))

    @classmethod
    def _add(cls, spec: BlueprintSpec) -> None:
        key = (spec.topology, spec.name)
        if key in cls._specs:
            raise ValueError(f"blueprint {spec.name!r} is already registered for {spec.topology!r}")
        cls._specs[key] = spec

    @classmethod
    def get(cls, topology: str, name: str) -> BlueprintSpec:
        """The spec for ``name``; an unknown name lists the known ones for the topology."""
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
        try:
            return cls._specs[(topology, name)]
        except KeyError:
            known = cls.names(topology)
            raise UnknownBlueprintError(
                f"unknown blueprint {name!r} for topology {topology!r}; known: {known}."
                + did_you_mean(str(name), known)
            ) from None

    @classmethod
    def list_for_topology(cls, topology: str) -> list[BlueprintSpec]:
        """Every spec registered for ``topology``, sorted by name."""
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
        return sorted((s for (t, _), s in cls._specs.items() if t == topology), key=lambda s: s.name)

    @classmethod
    def names(cls, topology: str) -> list[str]:
        """Blueprint names registered for ``topology``, sorted."""
        return [s.name for s in cls.list_for_topology(topology)]

    @classmethod
    def create(cls, topology: str, name: str, dim: int, **kwargs: Any) -> nn.Module:
        """Build blueprint ``name`` for ``topology`` at width ``dim``."""
        return cls.get(topology, name).create(dim, **kwargs)

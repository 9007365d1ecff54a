"""The blueprint registry: one place that knows every seed module and what it costs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import nn

from esper.errors import UnknownBlueprintError, did_you_mean

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
            (exact for default keyword arguments; the registry tests check it).
        description: one line for humans.
        needs_sequence: the seed mixes positions along ``T`` of ``(B, T, C)`` (attention), so
            it means nothing on 2-D ``(B, C)`` features, which slots see as a sequence of one.
    """

    name: str
    topology: str
    factory: Factory
    param_estimate: Callable[[int], int]
    description: str
    needs_sequence: bool = False

    def create(self, dim: int, **kwargs: Any) -> nn.Module:
        """Build the seed for features of width ``dim``."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"blueprint {self.name!r} needs dim as an int >= 1, got {dim!r}")
        return self.factory(dim, **kwargs)


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
            key = (topology, name)
            if key in cls._specs:
                raise ValueError(f"blueprint {name!r} is already registered for {topology!r}")
            cls._specs[key] = BlueprintSpec(
                name, topology, factory, param_estimate, description, needs_sequence
            )
            return factory

        return decorator

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
        return sorted(
            (s for (t, _), s in cls._specs.items() if t == topology), key=lambda s: s.name
        )

    @classmethod
    def names(cls, topology: str) -> list[str]:
        """Blueprint names registered for ``topology``, sorted."""
        return [s.name for s in cls.list_for_topology(topology)]

    @classmethod
    def create(cls, topology: str, name: str, dim: int, **kwargs: Any) -> nn.Module:
        """Build blueprint ``name`` for ``topology`` at width ``dim``."""
        return cls.get(topology, name).create(dim, **kwargs)

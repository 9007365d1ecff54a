"""The controller registry: every controller by name, built from a run config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from esper.errors import ConfigError, did_you_mean
from esper.leyline.observation import Policy

if TYPE_CHECKING:
    from esper.tolaria.config import RunConfig

__all__ = ["ControllerRegistry", "ControllerSpec"]

ControllerFactory = Callable[["RunConfig"], Policy]
F = TypeVar("F", bound=ControllerFactory)


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    """A registered controller.

    Attributes:
        name: the name a run config's ``controller`` field uses.
        factory: ``factory(config) -> Policy``, taking its knobs from the run config.
        description: one line for humans.
    """

    name: str
    factory: ControllerFactory
    description: str

    def create(self, config: RunConfig) -> Policy:
        """Build the controller for ``config``."""
        return self.factory(config)


class ControllerRegistry:
    """Class-level registry of controllers keyed by name."""

    _specs: ClassVar[dict[str, ControllerSpec]] = {}

    @classmethod
    def register(cls, name: str, *, description: str = "") -> Callable[[F], F]:
        """Decorator that registers ``factory(config) -> Policy``; a duplicate name is an error."""

        def decorator(factory: F) -> F:
            if name in cls._specs:
                raise ValueError(f"controller {name!r} is already registered")
            cls._specs[name] = ControllerSpec(name, factory, description)
            return factory

        return decorator

    @classmethod
    def get(cls, name: str) -> ControllerSpec:
        """The spec for ``name``; an unknown name lists the known ones."""
        try:
            return cls._specs[name]
        except KeyError:
            known = cls.names()
            raise ConfigError(
                f"unknown controller {name!r}; known: {known}." + did_you_mean(str(name), known)
            ) from None

    @classmethod
    def list_controllers(cls) -> list[ControllerSpec]:
        """Every registered spec, sorted by name."""
        return sorted(cls._specs.values(), key=lambda s: s.name)

    @classmethod
    def names(cls) -> list[str]:
        """Registered controller names, sorted."""
        return [s.name for s in cls.list_controllers()]

    @classmethod
    def create(cls, name: str, config: RunConfig) -> Policy:
        """Build controller ``name`` for ``config``."""
        return cls.get(name).create(config)

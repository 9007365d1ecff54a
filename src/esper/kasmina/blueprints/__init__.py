"""Seed blueprints: a registry of residual modules that start as the identity, and width growth."""

from esper.kasmina.blueprints import cnn as _cnn  # noqa: F401 (registers the CNN seeds)
from esper.kasmina.blueprints import transformer as _transformer  # noqa: F401 (registers)
from esper.kasmina.blueprints import width as _width  # noqa: F401 (registers the width blueprints)
from esper.kasmina.blueprints.registry import TOPOLOGIES, BlueprintRegistry, BlueprintSpec

__all__ = ["TOPOLOGIES", "BlueprintRegistry", "BlueprintSpec"]

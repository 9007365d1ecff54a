"""Esper: morphogenetic training for PyTorch — networks that grow seeds into slots as they train.

``import esper`` loads neither torch nor gymnasium: the names below are imported on first use
(PEP 562), so ``esper --help`` starts in a fraction of a second. The Gymnasium environment
``esper/Morphogenesis-v0`` is registered when gymnasium is imported (or now, if it already is).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# Before torch loads OpenMP: on shared machines, busy-waiting OpenMP threads stall 3-12x when a
# neighbour is busy; passive waiting removes the stall. A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from esper._gym import register_when_gymnasium_loads

if TYPE_CHECKING:
    from esper.integrations.loop import Grower
    from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
    from esper.kasmina.inject import inject_slots
    from esper.kasmina.slot import QualityGates, SeedSlot
    from esper.tolaria.checkpoint import load_grown

__all__ = [
    "CNNHost",
    "Grower",
    "MorphogeneticModel",
    "QualityGates",
    "SeedSlot",
    "TransformerHost",
    "inject_slots",
    "load_grown",
]

__version__ = "0.1.0"

_LAZY = {
    "Grower": "esper.integrations.loop",
    "inject_slots": "esper.kasmina.inject",
    "CNNHost": "esper.kasmina.host",
    "MorphogeneticModel": "esper.kasmina.host",
    "TransformerHost": "esper.kasmina.host",
    "QualityGates": "esper.kasmina.slot",
    "SeedSlot": "esper.kasmina.slot",
    "load_grown": "esper.tolaria.checkpoint",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (it needs torch)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'esper' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


register_when_gymnasium_loads()

"""Esper: morphogenetic training for PyTorch — networks that grow seeds into slots as they train."""

import os

# Before torch loads OpenMP: on shared machines, busy-waiting OpenMP threads stall 3-12x when a
# neighbour is busy; passive waiting removes the stall. A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

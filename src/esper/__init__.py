"""Esper: morphogenetic training for PyTorch — networks that grow seeds into slots as they train."""

from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
from esper.kasmina.slot import QualityGates, SeedSlot

__all__ = [
    "CNNHost",
    "MorphogeneticModel",
    "QualityGates",
    "SeedSlot",
    "TransformerHost",
]

__version__ = "0.1.0"

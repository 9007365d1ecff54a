"""Hosts and the morphogenetic model (public import path)."""

from esper.kasmina.hosts import CNNHost, HostBase, InjectionSpec, TransformerHost, build_host
from esper.kasmina.model import MorphogeneticModel

__all__ = [
    "CNNHost",
    "HostBase",
    "InjectionSpec",
    "MorphogeneticModel",
    "TransformerHost",
    "build_host",
]

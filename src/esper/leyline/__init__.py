"""Shared contracts: enums, lifecycle transitions, action space, event schemas (no torch, no I/O)."""

from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve, AlphaMode
from esper.leyline.stages import (
    VALID_TRANSITIONS,
    SeedStage,
    is_active_stage,
    is_failure_stage,
    is_terminal_stage,
    is_valid_transition,
)

__all__ = [
    "VALID_TRANSITIONS",
    "AlphaAlgorithm",
    "AlphaCurve",
    "AlphaMode",
    "SeedStage",
    "is_active_stage",
    "is_failure_stage",
    "is_terminal_stage",
    "is_valid_transition",
]

"""Seed lifecycle stages and the one table of legal transitions between them."""

from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType


class SeedStage(IntEnum):
    """Where a seed is in its life. Values are stable: checkpoints store them."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10


VALID_TRANSITIONS: MappingProxyType[SeedStage, frozenset[SeedStage]] = MappingProxyType(
    {
        SeedStage.UNKNOWN: frozenset(),
        SeedStage.DORMANT: frozenset({SeedStage.GERMINATED}),
        SeedStage.GERMINATED: frozenset({SeedStage.TRAINING, SeedStage.PRUNED}),
        SeedStage.TRAINING: frozenset({SeedStage.BLENDING, SeedStage.PRUNED}),
        SeedStage.BLENDING: frozenset({SeedStage.HOLDING, SeedStage.PRUNED}),
        SeedStage.HOLDING: frozenset({SeedStage.FOSSILIZED, SeedStage.BLENDING, SeedStage.PRUNED}),
        SeedStage.FOSSILIZED: frozenset(),
        SeedStage.PRUNED: frozenset({SeedStage.EMBARGOED}),
        SeedStage.EMBARGOED: frozenset({SeedStage.RESETTING}),
        SeedStage.RESETTING: frozenset({SeedStage.DORMANT}),
    }
)
"""Legal lifecycle moves: ``VALID_TRANSITIONS[a]`` is the set of stages reachable from ``a``."""

_ACTIVE = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
_TERMINAL = frozenset({SeedStage.FOSSILIZED})
_FAILURE = frozenset({SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING})


def is_valid_transition(from_stage: SeedStage | int, to_stage: SeedStage | int) -> bool:
    """True when ``from_stage -> to_stage`` is in ``VALID_TRANSITIONS``."""
    try:
        return SeedStage(to_stage) in VALID_TRANSITIONS[SeedStage(from_stage)]
    except ValueError:
        return False


def is_active_stage(stage: SeedStage | int) -> bool:
    """True for stages whose seed computes in the forward pass (TRAINING..FOSSILIZED)."""
    return stage in _ACTIVE


def is_terminal_stage(stage: SeedStage | int) -> bool:
    """True for stages with no way out (FOSSILIZED)."""
    return stage in _TERMINAL


def is_failure_stage(stage: SeedStage | int) -> bool:
    """True for the stages a pruned seed passes through (PRUNED, EMBARGOED, RESETTING)."""
    return stage in _FAILURE


OUTPUT_STAGES: frozenset[SeedStage] = frozenset({SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
"""Stages whose seed shapes the model's output (GERMINATED and TRAINING seeds leave it unchanged):
the seeds of a run's final model, of its export and of its summary's parameter count."""

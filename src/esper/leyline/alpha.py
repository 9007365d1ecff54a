"""Enums that describe how a seed's alpha moves and how it blends."""

from __future__ import annotations

from enum import IntEnum


class AlphaMode(IntEnum):
    """Direction of an alpha ramp in progress."""

    HOLD = 0
    UP = 1
    DOWN = 2


class AlphaCurve(IntEnum):
    """Shape of an alpha ramp from start to target."""

    LINEAR = 1
    COSINE = 2
    SIGMOID = 3


class AlphaAlgorithm(IntEnum):
    """How seed features are mixed into host features."""

    ADD = 1
    MULTIPLY = 2
    GATE = 3

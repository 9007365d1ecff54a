"""The alpha enums' pinned values."""

from __future__ import annotations

from esper.leyline import AlphaAlgorithm, AlphaCurve, AlphaMode


def test_alpha_enum_values_are_pinned():
    assert {m.name: int(m) for m in AlphaMode} == {"HOLD": 0, "UP": 1, "DOWN": 2}
    assert {m.name: int(m) for m in AlphaCurve} == {"LINEAR": 1, "COSINE": 2, "SIGMOID": 3}
    assert {m.name: int(m) for m in AlphaAlgorithm} == {"ADD": 1, "MULTIPLY": 2, "GATE": 3}

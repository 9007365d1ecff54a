"""The lifecycle table: stages, VALID_TRANSITIONS exactly as DESIGN pins them, stage predicates."""

from __future__ import annotations

import pytest

from esper.leyline import (
    VALID_TRANSITIONS,
    SeedStage,
    is_active_stage,
    is_failure_stage,
    is_terminal_stage,
    is_valid_transition,
)

S = SeedStage

# The pinned transitions (README, "The seed lifecycle"), written out by hand.
EXPECTED = {
    S.UNKNOWN: set(),
    S.DORMANT: {S.GERMINATED},
    S.GERMINATED: {S.TRAINING, S.PRUNED},
    S.TRAINING: {S.BLENDING, S.PRUNED},
    S.BLENDING: {S.HOLDING, S.PRUNED},
    S.HOLDING: {S.FOSSILIZED, S.BLENDING, S.PRUNED},
    S.FOSSILIZED: set(),
    S.PRUNED: {S.EMBARGOED},
    S.EMBARGOED: {S.RESETTING},
    S.RESETTING: {S.DORMANT},
}


def test_stage_values_are_pinned():
    assert {s.name: int(s) for s in SeedStage} == {
        "UNKNOWN": 0,
        "DORMANT": 1,
        "GERMINATED": 2,
        "TRAINING": 3,
        "BLENDING": 4,
        "HOLDING": 6,
        "FOSSILIZED": 7,
        "PRUNED": 8,
        "EMBARGOED": 9,
        "RESETTING": 10,
    }


def test_valid_transitions_match_design_exactly():
    assert set(VALID_TRANSITIONS) == set(SeedStage)
    assert {k: set(v) for k, v in VALID_TRANSITIONS.items()} == EXPECTED


def test_valid_transitions_is_read_only():
    with pytest.raises(TypeError):
        VALID_TRANSITIONS[S.FOSSILIZED] = frozenset({S.PRUNED})  # type: ignore[index]
    assert all(isinstance(v, frozenset) for v in VALID_TRANSITIONS.values())


@pytest.mark.parametrize("a", list(SeedStage))
@pytest.mark.parametrize("b", list(SeedStage))
def test_is_valid_transition_agrees_with_the_table(a, b):
    assert is_valid_transition(a, b) is (b in EXPECTED[a])
    assert is_valid_transition(int(a), int(b)) is (b in EXPECTED[a])


def test_is_valid_transition_rejects_values_that_are_not_stages():
    assert is_valid_transition(5, 6) is False  # 5 is not a stage
    assert is_valid_transition(S.DORMANT, 99) is False
    assert is_valid_transition(-1, S.DORMANT) is False


def test_every_stage_but_unknown_is_reachable_from_dormant_and_fossilized_is_the_only_sink():
    seen, frontier = {S.DORMANT}, [S.DORMANT]
    while frontier:
        for nxt in VALID_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(SeedStage) - {S.UNKNOWN}
    assert [s for s in seen if not VALID_TRANSITIONS[s]] == [S.FOSSILIZED]


def test_stage_predicates():
    active = {S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED}
    failure = {S.PRUNED, S.EMBARGOED, S.RESETTING}
    for s in SeedStage:
        assert is_active_stage(s) is (s in active), s
        assert is_terminal_stage(s) is (s == S.FOSSILIZED), s
        assert is_failure_stage(s) is (s in failure), s
        assert is_active_stage(int(s)) is (s in active)
        assert is_failure_stage(int(s)) is (s in failure)
    assert not is_active_stage(99) and not is_failure_stage(99) and not is_terminal_stage(99)

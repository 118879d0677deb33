"""Every (state, operation) pair of the transition table."""

from __future__ import annotations

import itertools

import pytest

from runtime.errdefs import FailedPrecondition, NotFound
from runtime.state import TRANSITIONS, Op, next_state
from runtime.types import Status

LIVE = (Status.CREATED, Status.RUNNING, Status.PAUSING, Status.PAUSED)


@pytest.mark.parametrize("state,op", list(itertools.product(Status, Op)))
def test_every_pair_is_a_state_or_a_named_error(state: Status, op: Op) -> None:
    if (state, op) in TRANSITIONS:
        assert next_state(state, op) is TRANSITIONS[(state, op)]
        return
    expected = NotFound if state is Status.DELETED else FailedPrecondition
    with pytest.raises(expected) as info:
        next_state(state, op, "container c1")
    assert "container c1" in str(info.value)


@pytest.mark.parametrize("state", LIVE)
def test_exit_wins_from_every_live_state(state: Status) -> None:
    assert next_state(state, Op.EXIT) is Status.STOPPED


def test_only_created_or_stopped_can_be_deleted() -> None:
    deletable = {s for s in Status if (s, Op.DELETE) in TRANSITIONS}
    assert deletable == {Status.CREATED, Status.STOPPED}


def test_running_cannot_start_again() -> None:
    with pytest.raises(FailedPrecondition, match="cannot start container x in state running"):
        next_state(Status.RUNNING, Op.START, "container x")

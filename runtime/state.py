"""The process state machine as a table (containerd's init/exec states, runwasi's TaskState).

Every legal (state, operation) pair is listed; anything else is a FailedPrecondition naming both.
EXIT is accepted from every live state. A state changes only after the side effect succeeded
(the caller commits with :func:`next_state` once the backend call returned).
"""

from __future__ import annotations

import enum

from runtime.errdefs import FailedPrecondition, NotFound
from runtime.types import Status


class Op(enum.Enum):
    START = "start"
    PAUSE = "pause"
    PAUSED = "paused"  # the freezer reported the pause complete
    RESUME = "resume"
    EXIT = "exit"
    DELETE = "delete"


_S = Status
TRANSITIONS: dict[tuple[Status, Op], Status] = {
    (_S.CREATED, Op.START): _S.RUNNING,
    (_S.CREATED, Op.EXIT): _S.STOPPED,
    (_S.CREATED, Op.DELETE): _S.DELETED,
    (_S.RUNNING, Op.PAUSE): _S.PAUSING,
    (_S.RUNNING, Op.EXIT): _S.STOPPED,
    (_S.PAUSING, Op.PAUSED): _S.PAUSED,
    (_S.PAUSING, Op.EXIT): _S.STOPPED,
    (_S.PAUSED, Op.RESUME): _S.RUNNING,
    (_S.PAUSED, Op.EXIT): _S.STOPPED,
    (_S.STOPPED, Op.DELETE): _S.DELETED,
}


def next_state(state: Status, op: Op, what: str = "process") -> Status:
    """The state after ``op``, or an errdefs error saying why ``op`` is not allowed now."""
    try:
        return TRANSITIONS[(state, op)]
    except KeyError:
        if state is Status.DELETED:
            raise NotFound(f"{what} already deleted") from None
        raise FailedPrecondition(f"cannot {op.value} {what} in state {state.value}") from None

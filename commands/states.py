"""The command state machine of PROTOCOL.md §5, in one place.

    received → queued → executing → succeeded | partially_succeeded | failed
    or rejected (business rule), expired (past its deadline or TTL), cancelled.

`executing → queued` is the retry edge: a retryable MT5 answer, or the sweeper re-queueing a
command whose worker died, sends it back to its lane.
"""

from __future__ import annotations

from django.db import models


class State(models.TextChoices):
    RECEIVED = "received"
    QUEUED = "queued"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.QUEUED, State.REJECTED, State.EXPIRED, State.CANCELLED}),
    State.QUEUED: frozenset({State.EXECUTING, State.REJECTED, State.EXPIRED, State.CANCELLED}),
    State.EXECUTING: frozenset(
        {State.SUCCEEDED, State.PARTIALLY_SUCCEEDED, State.FAILED, State.REJECTED, State.EXPIRED, State.QUEUED}
    ),
    State.SUCCEEDED: frozenset(),
    State.PARTIALLY_SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.REJECTED: frozenset(),
    State.EXPIRED: frozenset(),
    State.CANCELLED: frozenset(),
}

TERMINAL: frozenset[State] = frozenset(state for state, nexts in TRANSITIONS.items() if not nexts)
ACTIVE: frozenset[State] = frozenset(State) - TERMINAL


class IllegalTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"A command cannot go from {current} to {target}.")
        self.current = current
        self.target = target


def can_transition(current: str, target: str) -> bool:
    return State(target) in TRANSITIONS[State(current)]


def check_transition(current: str, target: str) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)

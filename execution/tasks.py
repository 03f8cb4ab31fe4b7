"""django-q2 tasks: thin wrappers taking primary keys or lane names."""

from __future__ import annotations

from execution.runner import command_execute, lane_run


def run_lane(lane: str) -> int:
    """A lane's doorbell: run the lane's oldest queued command(s)."""
    return lane_run(lane)


def execute_command(command_pk: int) -> str | None:
    """One command's doorbell, as rung before doorbells named their lane: still answered, so
    tasks queued by an earlier version run after an upgrade."""
    return command_execute(command_pk)

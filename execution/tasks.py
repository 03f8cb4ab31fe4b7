"""django-q2 tasks: thin wrappers taking primary keys."""

from __future__ import annotations

from execution.runner import command_execute


def execute_command(command_pk: int) -> str | None:
    return command_execute(command_pk)

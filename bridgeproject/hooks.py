"""Hooks: how a lower layer lets a higher one react without importing it (ARCHITECTURE.md "Layering").

A lower app declares each hook in its own `hooks.py`, saying what it is for and who connects to
it; the higher app connects its receiver once, in its `AppConfig.ready()`. A hook has exactly one
receiver, so who reacts is never a guess: connecting a second, different receiver is an error.
Until a receiver is connected a hook runs its default, which is what the lower layer does alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class HookAlreadyConnected(RuntimeError):
    """A second receiver for a hook that takes one."""


class Hook(Generic[P, R]):
    """A named point in a lower layer that a higher layer's receiver answers."""

    def __init__(self, name: str, *, default: Callable[P, R]) -> None:
        self.name = name
        self._default = default
        self._receiver: Callable[P, R] | None = None

    def connect(self, receiver: Callable[P, R]) -> None:
        """Make `receiver` the one answer to this hook (connecting the same one again is a no-op)."""
        if self._receiver is not None and self._receiver is not receiver:
            raise HookAlreadyConnected(f"hook {self.name!r} is already answered by {self._receiver!r}")
        self._receiver = receiver

    @property
    def receiver(self) -> Callable[P, R] | None:
        return self._receiver

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return (self._receiver or self._default)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Hook {self.name} -> {self._receiver!r}>"

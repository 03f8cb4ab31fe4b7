"""A clock for tests that assert how long code waited: exactly, whatever the machine's load.

A test puts it in place of a module's `time` (and `select`) with monkeypatch: the module then
reads the time from it, and its waits (time.sleep, select.select's timeout) pass virtual time
at once instead of real time. So "returned without waiting" is `== 0.0` and "waited the whole
bound and no longer" is the bound itself, where a wall-clock window could be missed by a busy
machine's scheduling.
"""

from __future__ import annotations

import select
import time
from typing import Any


class VirtualClock:
    def __init__(self, *, wait_at_most: float = 60.0) -> None:
        # From the real monotonic clock's reading, so times taken before the test stay comparable.
        self.now = time.monotonic()
        self.started = self.now
        self.waits: list[float] = []
        # A wait that never ends, or a loop that spins without waiting, fails instead of hanging.
        self.wait_at_most = wait_at_most
        self._reads_since_time_passed = 0

    def monotonic(self) -> float:
        self._reads_since_time_passed += 1
        if self._reads_since_time_passed > 100_000:
            raise AssertionError("the clock was read 100,000 times with no time passing: a loop that never waits")
        return self.now

    def advance(self, seconds: float) -> None:
        """Time passing while the code under test works (not a wait of its own)."""
        self.now += seconds
        self._reads_since_time_passed = 0

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.advance(seconds)
        if self.now - self.started > self.wait_at_most:
            raise AssertionError(f"waited {self.now - self.started:.1f} virtual seconds: a wait without an end")

    def select(self, rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> Any:
        """select.select: what is ready now returns at once; otherwise the whole timeout passes."""
        if timeout is None:
            raise AssertionError("select without a timeout: it could wait for ever")
        ready = select.select(rlist, wlist, xlist, 0)
        if not any(ready):
            self.sleep(timeout)
        return ready

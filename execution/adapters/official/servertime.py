"""The trade server's clock: how far ahead of UTC the broker's wall clock runs.

MT5 stamps every time (ticks, positions, orders, deals, a symbol's ``time``) in the server's
wall clock written as if it were a Unix timestamp, and reads the dates of ``history_*_get``
the same way. No API field gives the offset (typically +2 h in winter and +3 h in summer for
an EET broker), so the adapter learns it from ticks: a symbol whose tick time moved between
two looks a few minutes apart ticked since the first look, so its latest tick is at most that
old; its time minus the local UTC clock, rounded to the nearest 30 minutes, is the offset.
A single look cannot tell a fresh tick from one hours old (a closed market), so it never
decides alone.

Until a fresh tick has taught it (a closed market, a terminal just connected), the offset is
the last one learned, or ``MT5_SERVER_UTC_OFFSET_HOURS``, with a log line saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

logger = logging.getLogger("bridge.execution")

# Offsets are whole half hours (a few brokers and zones use :30).
ROUNDING_SECONDS = 1800
# The offsets a server can have: UTC-12 to UTC+14.
PLAUSIBLE_SECONDS = (-12 * 3600, 14 * 3600)
# A tick that moved between two looks at most this far apart is recent enough for the rounding
# to be exact (it would have to be 15 minutes old to round to the wrong half hour).
MAX_LOOK_GAP_SECONDS = 600.0
# How often the offset is looked at again once learned (it changes twice a year, at DST) ...
RELEARN_SECONDS = 300.0
# ... and before (the second look that can learn it comes this long after the first).
RETRY_SECONDS = 30.0


class ServerClock:
    """One terminal's server offset: learned from ticks, or the fallback until then."""

    def __init__(self, fallback_hours: float, *, now: Callable[[], float] | None = None) -> None:
        self.fallback = timedelta(hours=fallback_hours)
        self._now = now or (lambda: time.time())
        self.offset = self.fallback
        self.learned = False
        # The previous look: each probed symbol's tick time (epoch ms, server clock), and when.
        self._seen: dict[str, int] = {}
        self._seen_at: float | None = None
        self._next_look = 0.0
        self._said_fallback = False

    def due(self) -> bool:
        return self._now() >= self._next_look

    def forget(self) -> None:
        """After a reconnect: the ticks seen before say nothing about the new link, and the
        offset is looked at again at once (it is kept until a fresh tick replaces it)."""
        self._seen, self._seen_at, self._next_look = {}, None, 0.0

    def look(self, ticks: Mapping[str, int]) -> timedelta:
        """Learn from one look at some symbols' latest tick times (``time_msc``); returns the
        offset to use."""
        now = self._now()
        fresh = []
        if self._seen_at is not None and now - self._seen_at <= MAX_LOOK_GAP_SECONDS:
            fresh = [msc for name, msc in ticks.items() if name in self._seen and msc > self._seen[name]]
        self._seen, self._seen_at = dict(ticks), now
        learned = self._learn(max(fresh), now) if fresh else None
        if learned is not None:
            if learned != self.offset or not self.learned:
                logger.info("MT5 server clock: UTC%s, learned from a fresh tick", _hours(learned))
            self.offset, self.learned, self._said_fallback = learned, True, False
            self._next_look = now + RELEARN_SECONDS
            return self.offset
        if not self.learned and not self._said_fallback:
            logger.warning(
                "MT5 server clock: no fresh tick to learn it from yet; using UTC%s (MT5_SERVER_UTC_OFFSET_HOURS)",
                _hours(self.offset),
            )
            self._said_fallback = True
        self._next_look = now + (RELEARN_SECONDS if self.learned else RETRY_SECONDS)
        return self.offset

    @staticmethod
    def _learn(tick_msc: int, now: float) -> timedelta | None:
        seconds = round((tick_msc / 1000 - now) / ROUNDING_SECONDS) * ROUNDING_SECONDS
        low, high = PLAUSIBLE_SECONDS
        return timedelta(seconds=seconds) if low <= seconds <= high else None


def _hours(offset: timedelta) -> str:
    hours = offset.total_seconds() / 3600
    return f"{hours:+g}h"

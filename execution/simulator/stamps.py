"""What the trade server stamps on each row it writes: tickets from the counter every process
shares, and times in epoch milliseconds (UTC).

The rows keep UTC; the terminal shows every time in the server's wall clock, as MT5 does:
UTC + ``SIM_SERVER_UTC_OFFSET_HOURS``, written as if it were a Unix timestamp
(``server_msc``), and reads the dates it is given the same way.
"""

from __future__ import annotations

import time

from django.conf import settings

from execution.models import SimTicketSequence
from execution.simulator import sql

# Tickets start high, like a real server's, so they never look like row ids.
TICKET_START = 50_000_000


def now_msc() -> int:
    return time.time_ns() // 1_000_000


def server_offset_msc() -> int:
    """How far the simulated server's wall clock runs ahead of UTC, in milliseconds."""
    return round(float(getattr(settings, "SIM_SERVER_UTC_OFFSET_HOURS", 0)) * 3_600_000)


def server_msc(utc: int, offset: int) -> int:
    """A stored UTC time as the terminal shows it; 0 (no time: an open order's ``time_done``) stays 0."""
    return utc + offset if utc else 0


def allocate_tickets(count: int) -> list[int]:
    """Reserve ``count`` consecutive tickets in one statement.

    The row lock taken by the UPDATE is held until the caller's transaction ends, which is
    what keeps tickets unique across processes; callers allocate as late as they can.
    """
    for _ in range(2):
        last = sql.advance_ticket_sequence(count)
        if last is not None:
            return list(range(last - count + 1, last + 1))
        # First use (or a test database flush): create the counter and try again.
        SimTicketSequence.objects.bulk_create([SimTicketSequence(id=1, value=TICKET_START)], ignore_conflicts=True)
    raise RuntimeError("the simulator's ticket sequence could not be created")

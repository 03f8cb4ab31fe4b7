"""What the trade server stamps on each row it writes: tickets from the counter every process
shares, and times in epoch milliseconds.
"""

from __future__ import annotations

import time

from execution.models import SimTicketSequence
from execution.simulator import sql

# Tickets start high, like a real server's, so they never look like row ids.
TICKET_START = 50_000_000


def now_msc() -> int:
    return time.time_ns() // 1_000_000


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

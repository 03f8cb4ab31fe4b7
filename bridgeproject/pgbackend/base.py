"""Django's PostgreSQL backend with a health check that costs no round trip when nothing is wrong.

Django checks a persistent connection before reusing it with a `SELECT 1`: a round trip, and
PostgreSQL's CPU, on every request. A connection the server dropped (a restart, an idle timeout,
a terminated backend) has already said so on its socket: PostgreSQL sends the error, or the
kernel the end of the stream. So an idle connection with nothing to read is usable, and only one
with something waiting (that, or a NOTIFY) gets the full check. A connection that died without a
word (a network partition) fails its next query, as it would with no check at all.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        try:
            readable, _, _ = select.select([self.connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable or super().is_usable()
